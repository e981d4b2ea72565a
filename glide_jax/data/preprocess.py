"""Per-example and per-batch preprocessing (TensorFlow ops plus numpy callbacks).

Every random choice is a stateless function of the example's seed, a (2,)
int64 tensor `[seed, epoch * 2**32 + index_in_epoch]`, so a batch depends only
on the pipeline seed and its position: that is what makes resuming exact.
Each use folds in its own constant so crops, flips, caption picks and caption
dropout are independent.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Sequence

import numpy as np

from glide_jax.data import masks
from glide_jax.data.tf_env import import_tensorflow

_LOG = logging.getLogger(__name__)

tf = import_tensorflow()

# Constants folded into an example's seed, one per random decision.
_CROP, _FLIP, _PICK, _DROP = 1, 2, 3, 4


@dataclasses.dataclass(frozen=True)
class ExampleSpec:
    """What one example becomes, derived from the config and the model kind.

    Attributes:
      image_size: side of `image` (the model's output resolution).
      low_res_size: side of `low_res`, or None when the kind has none.
      mask_size: side of `inpaint_mask`, or None when the kind has none.
      random_crop: random instead of centre crop after resizing.
      random_flip: horizontal flips (off by default: captions say left/right).
      caption_dropout: share of captions replaced by the empty sequence.
    """

    image_size: int
    low_res_size: int | None
    mask_size: int | None
    random_crop: bool
    random_flip: bool
    caption_dropout: float


def _seed(seed, constant: int):
    return tf.random.experimental.stateless_fold_in(seed, constant)


def _resize(image, height, width, shrink):
    """Anti-aliased resize to (height, width) float32 in [0, 255].

    Shrinking averages each output pixel's footprint ("area", a box filter, as
    the reference's PIL BOX reductions); enlarging is bicubic, clipped because
    the cubic kernel overshoots.
    """
    return tf.cond(
        shrink,
        lambda: tf.image.resize(image, (height, width), method="area"),
        lambda: tf.clip_by_value(tf.image.resize(image, (height, width), method="bicubic"), 0, 255),
    )


def resize_and_crop(image, size: int, seed, random_crop: bool):
    """Resizes the short side to `size` (anti-aliased), then crops a square.

    Args:
      image: (H, W, 3) uint8.
      size: output side.
      seed: (2,) int64 example seed.
      random_crop: crop at a random offset instead of the centre.

    Returns:
      (size, size, 3) float32 in [0, 255].
    """
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(h, w)
    new_h = tf.maximum(size, tf.cast(tf.round(h * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(w * scale), tf.int32))
    resized = tf.cond(
        tf.logical_and(tf.equal(shape[0], new_h), tf.equal(shape[1], new_w)),
        lambda: tf.cast(image, tf.float32),
        lambda: _resize(image, new_h, new_w, shrink=new_h <= shape[0]),
    )
    if random_crop:
        limits = tf.stack([new_h - size + 1, new_w - size + 1])
        offsets = tf.random.stateless_uniform((2,), _seed(seed, _CROP), minval=0, maxval=tf.int32.max,
                                              dtype=tf.int32) % limits
    else:
        offsets = tf.stack([(new_h - size) // 2, (new_w - size) // 2])
    return tf.slice(resized, tf.concat([offsets, [0]], 0), [size, size, 3])


def downsample(image, size: int):
    """(S, S, 3) float32 in [0, 255] -> (size, size, 3), anti-aliased (the upsampler's input).

    Clipped to [0, 255]: a filter whose taps do not tile the image (a size
    that does not divide S) can overshoot the range by a hair.
    """
    if image.shape[0] == size:
        return image
    return tf.clip_by_value(_resize(image, size, size, shrink=tf.constant(size < image.shape[0])), 0.0, 255.0)


def pick_caption(caption, seed):
    """A scalar caption as is; from a 1-D list, one at random ("" if the list is empty)."""
    if caption.shape.rank == 0:
        return caption
    count = tf.shape(caption)[0]
    index = tf.random.stateless_uniform((), _seed(seed, _PICK), minval=0, maxval=tf.int32.max, dtype=tf.int32)
    return tf.cond(count > 0, lambda: tf.gather(caption, index % tf.maximum(count, 1)), lambda: tf.constant(""))


def preprocess_example(example, spec: ExampleSpec):
    """Decodes and transforms one example.

    Args:
      example: {"image": encoded bytes, "caption": string or 1-D strings,
        "seed": (2,) int64}.
      spec: the output spec.

    Returns:
      {"image": (S, S, 3) float32 in [-1, 1] on the 8-bit grid, "caption": string, "drop": bool,
       "seed": (2,) int64, and "low_res" (s, s, 3) float32 in [-1, 1] when
       spec.low_res_size is set}.
    """
    seed = example["seed"]
    image = tf.io.decode_image(example["image"], channels=3, expand_animations=False)
    # Back onto the 8-bit grid, as guided-diffusion's PIL resizes leave it: the
    # t = 0 decoder likelihood scores bins of 2/255 around those values.
    image = tf.round(resize_and_crop(image, spec.image_size, seed, spec.random_crop))
    if spec.random_flip:
        flip = tf.random.stateless_uniform((), _seed(seed, _FLIP)) < 0.5
        image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
    out = {
        "image": image / 127.5 - 1.0,
        "caption": pick_caption(example["caption"], seed),
        "drop": tf.random.stateless_uniform((), _seed(seed, _DROP)) < spec.caption_dropout,
        "seed": seed,
    }
    if spec.low_res_size is not None:
        out["low_res"] = downsample(image, spec.low_res_size) / 127.5 - 1.0
    return out


class CaptionTokenizer:
    """Turns a batch of captions into (tokens, mask), with caption dropout.

    A dropped or empty caption becomes the empty sequence: every position
    `pad_token` and the mask all False (the unconditional input of
    classifier-free guidance). Encodings are cached, since datasets repeat
    captions and epochs repeat everything.
    """

    def __init__(self, tokenizer, text_ctx: int, cache_size: int = 200_000):
        self._tokenizer = tokenizer
        # tf.data may run two batches' callbacks at once; tokenizers keep
        # their own caches, which are not promised to be thread-safe.
        self._lock = threading.Lock()
        self._text_ctx = int(text_ctx)
        self._cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self._cache_size = cache_size
        self.empty = (np.full((self._text_ctx,), tokenizer.pad_token, np.int32), np.zeros((self._text_ctx,), bool))
        self.truncated = 0  # distinct captions cut to text_ctx (the first is logged)

    def row(self, caption: bytes) -> tuple[np.ndarray, np.ndarray]:
        """One caption (utf-8 bytes) -> tokens (L,) int32, mask (L,) bool."""
        hit = self._cache.get(caption)
        if hit is not None:
            return hit
        text = caption.decode("utf-8")
        if not text.strip():
            return self.empty
        encoded = self._tokenizer.encode(text)
        if len(encoded) > self._text_ctx:
            self.truncated += 1
            if self.truncated == 1:
                _LOG.warning("glide_jax.data: captions longer than text_ctx = %d tokens are cut to it (GLIDE "
                             "does the same); the first has %d: %r", self._text_ctx, len(encoded), text[:200])
        tokens, mask = self._tokenizer.padded_tokens_and_mask(encoded, self._text_ctx)
        row = (np.asarray(tokens, np.int32), np.asarray(mask, bool))
        if len(self._cache) < self._cache_size:
            self._cache[caption] = row
        return row

    def __call__(self, captions: Sequence[bytes], drop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,) captions and (B,) bool dropout flags -> tokens (B, L) int32, mask (B, L) bool."""
        tokens = np.empty((len(captions), self._text_ctx), np.int32)
        mask = np.empty((len(captions), self._text_ctx), bool)
        with self._lock:
            for i, caption in enumerate(captions):
                tokens[i], mask[i] = self.empty if drop[i] else self.row(caption)
        return tokens, mask


def finish_batch(batch, spec: ExampleSpec, caption_tokenizer: CaptionTokenizer, mask_spec: masks.MaskSpec,
                 text_ctx: int):
    """Batch-level steps: tokenisation (+ dropout) and inpainting masks, via numpy.

    Args:
      batch: a batched `preprocess_example` output of B examples.

    Returns:
      The model batch: "image", "tokens" (B, L) int32, "mask" (B, L) bool, and
      "low_res" / "inpaint_mask" (B, S, S, 1) float32 as the spec asks.
    """
    tokens, mask = tf.numpy_function(caption_tokenizer, [batch["caption"], batch["drop"]], [tf.int32, tf.bool],
                                     stateful=False)
    out = {"image": batch["image"], "tokens": tf.ensure_shape(tokens, [None, text_ctx]),
           "mask": tf.ensure_shape(mask, [None, text_ctx])}
    if spec.low_res_size is not None:
        out["low_res"] = batch["low_res"]
    if spec.mask_size is not None:
        def make(seeds):
            return masks.random_masks(seeds, spec.mask_size, mask_spec)

        inpaint = tf.numpy_function(make, [batch["seed"]], tf.float32, stateful=False)
        out["inpaint_mask"] = tf.ensure_shape(inpaint, [None, spec.mask_size, spec.mask_size, 1])
    return out
