"""GLIDE's noised CLIP: image encoder f(x_t, t), text encoder g(c), guidance.

The image encoder is a ViT that also sees the diffusion step: its start token
is a learned vector per timestep, so it can embed noisy images x_t. The text
encoder is a causal transformer read out at the end-of-text token. Both end in
LayerNorm and a bias-free projection to a shared `n_embd` space, where CLIP
guidance (GLIDE, Nichol et al. 2021, Sec. 2.3) pushes the sample towards
higher exp(logit_scale) * <f(x_t, t), g(c)>.

Numerics follow glide-text2im's `glide_text2im/clip`: LayerNorm eps 1e-5 in
float32, exact (erf) GELU, q and k each scaled by head_dim^(-1/4), softmax in
float32, -1e10 added to the logits of masked keys. The reference pads the
context to a multiple of 32 with zero keys and masks them; a masked logit is
-1e10 and contributes exp(-1e10 - max) = 0 exactly, so this module masks the
same keys without padding (`attention_bias` reproduces the padded matrix).

Parameter logical axes (for `nn.with_logical_partitioning`):
  "embed"  the residual width n_state = n_head * n_head_state
  "heads"  the q/k/v output features (per-head chunks of n_state, contiguous)
  "mlp"    the 4 * n_state hidden features of the MLP
  "vocab"  token embedding rows
  None     positions, timesteps, patch pixels, the n_embd output features
"""

from __future__ import annotations

import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from glide_jax import config as config_lib

# CLIP's per-channel pixel statistics, in 0..255 units (RGB).
IMAGE_CHANNEL_MEANS = (122.77093945, 116.74601272, 104.09373519)
IMAGE_CHANNEL_STDS = (68.50053285, 66.63215831, 70.32316309)
# The reference's attention works on contexts padded to multiples of this.
ATTENTION_BLOCK_SIZE = 32
MASK_VALUE = -1e10
MAX_LOGIT_SCALE = math.log(100.0)  # the scale is capped at 100, as CLIP's

Dtype = Any


def _init(init_fn, axes):
    return nn.with_logical_partitioning(init_fn, axes)


def attention_bias(n_context: int, causal: bool) -> np.ndarray:
    """The reference's additive attention bias, over the padded context.

    Args:
      n_context: real context length (1 + patches, or max_text_len).
      causal: whether key j > query i is masked (the text encoder).

    Returns:
      (P, P) float32 with P = n_context rounded up to a multiple of 32: 0 where
      query i may attend to key j, -1e10 elsewhere. Padded queries see nothing.
    """
    padded = ATTENTION_BLOCK_SIZE * math.ceil(n_context / ATTENTION_BLOCK_SIZE)
    real = np.arange(padded) < n_context
    allowed = real[:, None] & real[None, :]
    if causal:
        allowed &= np.tri(padded, dtype=bool)
    return np.where(allowed, 0.0, MASK_VALUE).astype(np.float32)


def logit_scale_value(log_scale: jax.Array) -> jax.Array:
    """exp(log_scale) capped at 100: the similarity scale training and guidance both use
    (the released CLIP's is exactly 100)."""
    return jnp.exp(jnp.minimum(log_scale, MAX_LOGIT_SCALE))


class LayerNorm(nn.Module):
    """LayerNorm over the last axis in float32 (eps 1e-5, two-pass variance).

    Returns float32 whatever the input dtype, as the reference does.
    """

    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        scale = self.param("scale", _init(nn.initializers.ones, ("embed",)), (width,), jnp.float32)
        bias = self.param("bias", _init(nn.initializers.zeros, ("embed",)), (width,), jnp.float32)
        x = x.astype(jnp.float32)
        mean = jnp.mean(x, axis=-1, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
        return (x - mean) * jax.lax.rsqrt(var + self.epsilon) * scale + bias


def _dense(features: int, axes: tuple, use_bias: bool, dtype: Dtype, name: str,
           std: float | None = None) -> nn.Dense:
    """A Dense layer (the reference's `Affine`) with float32 logical-axis params.

    `std` is the reference's initial weight std; None means its default
    sqrt(2 / (n_in + n_out)), here the Glorot normal.
    """
    kernel_init = nn.initializers.glorot_normal() if std is None else nn.initializers.normal(std)
    return nn.Dense(
        features,
        use_bias=use_bias,
        dtype=dtype,
        param_dtype=jnp.float32,
        kernel_init=_init(kernel_init, axes),
        bias_init=_init(nn.initializers.zeros, axes[-1:]),
        name=name,
    )


class AttentionResblock(nn.Module):
    """Pre-LN multi-head self-attention with a residual connection.

    Attributes:
      n_head: number of heads; per-head features are contiguous chunks of the
        n_state features of q, k and v.
      causal: mask keys after the query (the text encoder).
      dtype: compute dtype of the projections.
    """

    n_head: int
    causal: bool
    n_resblocks: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T, n_state) residual stream -> (B, T, n_state)."""
        batch, length, n_state = x.shape
        head_dim = n_state // self.n_head
        h = LayerNorm(name="ln")(x)
        std = n_state ** -0.5
        q = _dense(n_state, ("embed", "heads"), True, self.dtype, "f_q", std)(h)
        k = _dense(n_state, ("embed", "heads"), False, self.dtype, "f_k", std)(h)
        v = _dense(n_state, ("embed", "heads"), True, self.dtype, "f_v", std)(h)
        split = lambda a: a.reshape(batch, length, self.n_head, head_dim)
        # Scaling q and k separately keeps the logits' magnitude low in fp16.
        scale = head_dim ** -0.25
        logits = jnp.einsum("bqhd,bkhd->bhqk", split(q) * scale, split(k) * scale)
        bias = attention_bias(length, self.causal)[:length, :length]
        logits = logits.astype(jnp.float32) + bias
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, split(v)).reshape(batch, length, n_state)
        out_std = (n_state * self.n_resblocks ** 2) ** -0.5
        out = _dense(n_state, ("heads", "embed"), True, self.dtype, "f_c", out_std)(out)
        return x + out


class MLPResblock(nn.Module):
    """Pre-LN MLP (n_state -> 4 n_state -> n_state, exact GELU) with a residual."""

    n_resblocks: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, T, n_state) -> (B, T, n_state)."""
        n_state = x.shape[-1]
        h = LayerNorm(name="ln")(x)
        h = _dense(4 * n_state, ("embed", "mlp"), True, self.dtype, "f_1", (2 * n_state) ** -0.5)(h)
        h = nn.gelu(h, approximate=False)
        out_std = (n_state * self.n_resblocks ** 2) ** -0.5
        h = _dense(n_state, ("mlp", "embed"), True, self.dtype, "f_2", out_std)(h)
        return x + h


class TransformerBlock(nn.Module):
    """Attention then MLP, both pre-LN residual blocks.

    `n_resblocks` (2 per block in the encoder) only scales the initial std of
    the output projections, as in the reference.
    """

    n_head: int
    causal: bool
    n_resblocks: int = 1
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = AttentionResblock(self.n_head, self.causal, self.n_resblocks, self.dtype,
                              name="f_attn")(x)
        return MLPResblock(self.n_resblocks, self.dtype, name="f_mlp")(x)


class OutputHead(nn.Module):
    """LayerNorm then a bias-free projection to the joint embedding space."""

    n_embd: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x: (B, n_state) -> (B, n_embd) float32."""
        h = LayerNorm(name="ln")(x)
        h = _dense(self.n_embd, ("embed", None), False, self.dtype, "f")(h)
        return h.astype(jnp.float32)


class ImageEmbedding(nn.Module):
    """Pixels -> patch tokens behind a per-timestep start token, then LayerNorm.

    Attributes:
      image_size, patch_size: input resolution and ViT patch size.
      n_state: residual width.
      n_timesteps: rows of the start-token table w_t (one per diffusion step).
      dtype: compute dtype of the patch projection.
    """

    image_size: int
    patch_size: int
    n_state: int
    n_timesteps: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x: (B, S, S, 3) in [-1, 1]; t: (B,) int -> (B, 1 + g^2, n_state) float32."""
        n_patch = self.image_size // self.patch_size
        std = self.n_state ** -0.5
        w_t = self.param("w_t", _init(nn.initializers.normal(std), (None, "embed")),
                         (self.n_timesteps, self.n_state), jnp.float32)
        w_pos = self.param("w_pos", _init(nn.initializers.normal(std), (None, "embed")),
                           (1 + n_patch ** 2, self.n_state), jnp.float32)
        # The reference CLIP was trained on 0..255 pixels, standardised per channel.
        pixels = (x.astype(jnp.float32) + 1.0) * 127.5
        pixels = (pixels - jnp.asarray(IMAGE_CHANNEL_MEANS, jnp.float32)) / jnp.asarray(
            IMAGE_CHANNEL_STDS, jnp.float32)
        patch_std = (2.0 / (self.n_state * self.patch_size ** 2)) ** 0.5
        patches = nn.Conv(
            self.n_state, (self.patch_size, self.patch_size), strides=self.patch_size,
            padding="VALID", use_bias=False, dtype=self.dtype, param_dtype=jnp.float32,
            kernel_init=_init(nn.initializers.normal(patch_std), (None, None, None, "embed")),
            name="patch_proj")(pixels)
        # NHWC flattening is row-major over (row, column), like the reference's NCHW view.
        patches = patches.astype(jnp.float32).reshape(x.shape[0], n_patch ** 2, self.n_state)
        start = jnp.take(w_t, t, axis=0)[:, None, :]
        h = jnp.concatenate([start, patches], axis=1) + w_pos[None]
        return LayerNorm(name="ln")(h)


class TextEmbedding(nn.Module):
    """Token embedding plus positional embedding (no LayerNorm, no padding row)."""

    n_vocab: int
    max_text_len: int
    n_state: int

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        """tokens: (B, L) int, L <= max_text_len -> (B, L, n_state) float32."""
        w_voc = self.param("w_voc", _init(nn.initializers.normal(0.02), ("vocab", "embed")),
                           (self.n_vocab, self.n_state), jnp.float32)
        w_pos = self.param("w_pos", _init(nn.initializers.normal(0.01), (None, "embed")),
                           (self.max_text_len, self.n_state), jnp.float32)
        return jnp.take(w_voc, tokens, axis=0) + w_pos[None, : tokens.shape[1]]


def _blocks(n_blocks: int, n_head: int, causal: bool, dtype: Dtype) -> list[TransformerBlock]:
    return [TransformerBlock(n_head, causal, 2 * n_blocks, dtype, name=f"block_{i}")
            for i in range(n_blocks)]


class ImageEncoder(nn.Module):
    """The noised-CLIP ViT f(x_t, t) (glide-text2im's `ImageEncoder`).

    Parameter names mirror the reference keys: `input` (w_t, patch_proj, w_pos,
    ln), `block_<i>` (f_attn, f_mlp), `output` (ln, f).
    """

    image_size: int
    patch_size: int
    n_embd: int
    n_head: int
    n_head_state: int
    n_blocks: int
    n_timesteps: int
    dtype: Dtype = jnp.float32

    def setup(self):
        n_state = self.n_head * self.n_head_state
        self.input = ImageEmbedding(self.image_size, self.patch_size, n_state,
                                    self.n_timesteps, self.dtype)
        self.blocks = _blocks(self.n_blocks, self.n_head, False, self.dtype)
        self.output = OutputHead(self.n_embd, self.dtype)

    def _check(self, x: jax.Array, t: jax.Array) -> None:
        size = self.image_size
        if x.ndim != 4 or x.shape[1:] != (size, size, 3):
            raise ValueError(f"CLIP image encoder wants (B, {size}, {size}, 3) NHWC images, got {x.shape}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"CLIP image encoder wants timesteps of shape ({x.shape[0]},), got {t.shape}")

    def embed(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """The input block: x (B, S, S, 3) in [-1, 1], t (B,) -> (B, 1 + g^2, n_state)."""
        self._check(x, t)
        return self.input(x, t)

    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """Unnormalised embedding: x (B, S, S, 3) in [-1, 1], t (B,) int -> (B, n_embd) float32.

        t are original diffusion steps (0..n_timesteps-1); others give NaN embeddings.
        """
        h = self.embed(x, t)
        for block in self.blocks:
            h = block(h)
        return self.output(h[:, 0])


class TextEncoder(nn.Module):
    """The CLIP text transformer g(c) (glide-text2im's `TextEncoder`), causal.

    Parameter names mirror the reference keys: `input` (w_voc, w_pos),
    `block_<i>` (f_attn, f_mlp), `output` (ln, f).
    """

    n_vocab: int
    max_text_len: int
    n_embd: int
    n_head: int
    n_head_state: int
    n_blocks: int
    dtype: Dtype = jnp.float32

    def setup(self):
        n_state = self.n_head * self.n_head_state
        self.input = TextEmbedding(self.n_vocab, self.max_text_len, n_state)
        self.blocks = _blocks(self.n_blocks, self.n_head, True, self.dtype)
        self.output = OutputHead(self.n_embd, self.dtype)

    def embed(self, tokens: jax.Array) -> jax.Array:
        """The input block: tokens (B, L) int -> (B, L, n_state) float32."""
        if tokens.ndim != 2 or tokens.shape[1] > self.max_text_len:
            raise ValueError(f"CLIP text encoder wants tokens (B, L<={self.max_text_len}), "
                             f"got {tokens.shape}")
        return self.input(tokens)

    def __call__(self, tokens: jax.Array, lens: jax.Array) -> jax.Array:
        """Unnormalised embedding, read at the end token.

        Args:
          tokens: (B, L) int, [start] + ids + [end] + zero padding.
          lens: (B,) int, tokens up to and including the end token (>= 1).

        Returns:
          (B, n_embd) float32.
        """
        if lens.shape != tokens.shape[:1]:
            raise ValueError(f"CLIP text lens must be ({tokens.shape[0]},), got {lens.shape}")
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        last = jnp.take_along_axis(h, (lens - 1)[:, None, None].astype(jnp.int32), axis=1)
        return self.output(last[:, 0])


def l2_normalize(z: jax.Array) -> jax.Array:
    """z / (||z|| + 1e-12) over the last axis, in float32, as the reference."""
    z = z.astype(jnp.float32)
    return z / (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-12)


class NoisedCLIP(nn.Module):
    """Both encoders and the learned log logit scale.

    Attributes:
      image_encoder, text_encoder: the two towers (adopted as submodules of
        those names).
      logit_scale_init: exp of the initial `logit_scale` param (100 in GLIDE).
    """

    image_encoder: ImageEncoder
    text_encoder: TextEncoder
    logit_scale_init: float = 100.0

    def setup(self):
        init = nn.initializers.constant(math.log(self.logit_scale_init))
        self.logit_scale = self.param("logit_scale", _init(init, ()), (), jnp.float32)

    def image_embeddings(self, x: jax.Array, t: jax.Array) -> jax.Array:
        """x (B, S, S, 3) in [-1, 1], t (B,) original steps -> (B, n_embd) unit vectors."""
        return l2_normalize(self.image_encoder(x, t))

    def text_embeddings(self, tokens: jax.Array, lens: jax.Array) -> jax.Array:
        """tokens (B, L) int, lens (B,) int -> (B, n_embd) unit vectors."""
        return l2_normalize(self.text_encoder(tokens, lens))

    def guidance_loss(self, x: jax.Array, t: jax.Array, text_emb: jax.Array) -> jax.Array:
        """scale * sum(text_emb * f(x, t)), a float32 scalar (scale: `logit_scale_value`).

        text_emb is (B, n_embd) (or (1, n_embd), broadcast), from `text_embeddings`.
        """
        image_emb = self.image_embeddings(x, t)
        return logit_scale_value(self.logit_scale) * jnp.sum(text_emb * image_emb)

    def __call__(self, x: jax.Array, t: jax.Array, tokens: jax.Array,
                 lens: jax.Array) -> dict[str, jax.Array]:
        """Both embeddings for contrastive training.

        Returns:
          {"image_emb": (B, n_embd), "text_emb": (B, n_embd) unit vectors,
           "logit_scale": () float32 (the log of the scale)}.
        """
        return {"image_emb": self.image_embeddings(x, t),
                "text_emb": self.text_embeddings(tokens, lens),
                "logit_scale": self.logit_scale}


def image_encoder_from_config(config: ml_collections.ConfigDict) -> ImageEncoder:
    """The image tower described by `config.clip`, computing in `config.model.dtype`."""
    config_lib.validate_clip(config)
    c = config.clip
    return ImageEncoder(c.image_size, c.patch_size, c.n_embd, c.n_head_image,
                        c.n_head_state_image, c.n_xf_blocks_image, c.n_timesteps,
                        jnp.dtype(config.model.dtype))


def text_encoder_from_config(config: ml_collections.ConfigDict) -> TextEncoder:
    """The text tower described by `config.clip`, computing in `config.model.dtype`."""
    config_lib.validate_clip(config)
    c = config.clip
    return TextEncoder(c.n_vocab, c.max_text_len, c.n_embd, c.n_head_text,
                       c.n_head_state_text, c.n_xf_blocks_text, jnp.dtype(config.model.dtype))


def create_clip(config: ml_collections.ConfigDict) -> NoisedCLIP:
    """Builds the noised CLIP from `config.clip`; compute dtype `config.model.dtype`."""
    return NoisedCLIP(image_encoder_from_config(config), text_encoder_from_config(config),
                      float(config.clip.logit_scale))


def example_inputs(config: ml_collections.ConfigDict, batch_size: int) -> dict[str, jax.Array]:
    """Keyword arguments for `create_clip(config).init(rng, **inputs)`."""
    c = config.clip
    return {
        "x": jnp.zeros((batch_size, c.image_size, c.image_size, 3), jnp.float32),
        "t": jnp.zeros((batch_size,), jnp.int32),
        "tokens": jnp.zeros((batch_size, c.max_text_len), jnp.int32),
        "lens": jnp.ones((batch_size,), jnp.int32),
    }


def clip_cond_fn(clip_module: NoisedCLIP, clip_params: Any, tokens: jax.Array, lens: jax.Array,
                 grad_scale: float) -> Callable[..., jax.Array]:
    """CLIP guidance: the gradient of the image-text score w.r.t. x_t.

    The text embedding is computed once, here; the returned function is pure
    and jittable.

    Args:
      clip_module: from `create_clip`.
      clip_params: its variables, `{"params": ...}` (boxed or plain arrays).
      tokens, lens: (B, L) int and (B,) int CLIP captions (from the CLIP tokenizer).
      grad_scale: multiplies the gradient (3.0 in GLIDE's notebook).

    Returns:
      cond_fn(x, t, **ignored) -> grad_scale * d/dx [exp(logit_scale) *
      sum(text_emb * image_embeddings(x, t))], with x (B, S, S, 3) float32 and
      t (B,) original steps; the gradient has x's shape, float32. Extra keyword
      arguments (a sampler's model conditioning) are ignored.
    """
    text_emb = clip_module.apply(clip_params, tokens, lens, method=NoisedCLIP.text_embeddings)

    def loss(x, t):
        return clip_module.apply(clip_params, x, t, text_emb, method=NoisedCLIP.guidance_loss)

    def cond_fn(x: jax.Array, t: jax.Array, **unused_kwargs) -> jax.Array:
        del unused_kwargs
        return jax.grad(loss)(x.astype(jnp.float32), t) * grad_scale

    return cond_fn
