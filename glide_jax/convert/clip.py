"""glide-text2im noised-CLIP state dicts -> Flax params of `glide_jax.models.clip`.

OpenAI released the two encoders as separate files (`clip_image_enc.pt`,
`clip_text_enc.pt`), each a flat `{name: tensor}` dict with keys such as
`blocks.input.w_t` or `blocks.block_3.f_attn.f_q.w`. Our modules use the same
names below `blocks.`, so every Flax leaf has exactly one reference key:

  <module>.kernel      <- <module>.w, an Affine (out, in): transposed to (in, out)
  input.patch_proj.kernel <- input.patch_proj (out, 3, p, p): to (p, p, 3, out)
  <module>.bias        <- <module>.b  (Affine bias or LayerNorm shift)
  <module>.scale       <- <module>.g  (LayerNorm gain)
  input.w_t / w_pos / w_voc <- the same name, unchanged

Every key must be consumed and every parameter filled with the right shape,
or `ClipConversionError` lists the missing keys, unexpected keys and shape
mismatches.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import traverse_util

from glide_jax.models import clip as clip_model

_LEAF_TO_TORCH = {"kernel": "w", "bias": "b", "scale": "g"}


class ClipConversionError(ValueError):
    """A CLIP state dict does not match the model built from the config."""


def torch_key(path: tuple[str, ...]) -> str:
    """The reference state-dict key of the Flax leaf at `path` (below the encoder)."""
    if path[-2:] == ("patch_proj", "kernel"):
        return "blocks." + ".".join(path[:-1])
    *modules, leaf = path
    return "blocks." + ".".join([*modules, _LEAF_TO_TORCH.get(leaf, leaf)])


def _to_flax_layout(path: tuple[str, ...], array: np.ndarray) -> np.ndarray:
    """Reorders a reference tensor into the layout of the Flax leaf at `path`."""
    if path[-1] != "kernel":
        return array
    if array.ndim == 4:  # conv (out, in, kh, kw) -> (kh, kw, in, out)
        return array.transpose(2, 3, 1, 0)
    return array.T  # Affine (out, in) -> Dense (in, out)


def _expected_shapes(encoder: nn.Module, *args) -> dict[tuple[str, ...], tuple[int, ...]]:
    variables = jax.eval_shape(lambda: encoder.init(jax.random.key(0), *args))
    params = nn.meta.unbox(variables["params"])
    return {path: tuple(leaf.shape) for path, leaf in traverse_util.flatten_dict(params).items()}


def _map_state(state: Mapping[str, Any], expected: dict, what: str) -> dict:
    """Fills the Flax tree `expected` ({path: shape}) from a flat reference dict."""
    params, missing, mismatched = {}, [], []
    by_key = {torch_key(path): path for path in expected}
    for key, path in sorted(by_key.items()):
        if key not in state:
            missing.append(key)
            continue
        array = _to_flax_layout(path, np.asarray(state[key], dtype=np.float32))
        if array.shape != expected[path]:
            mismatched.append(f"{key}: checkpoint {tuple(np.shape(state[key]))} -> {array.shape}, "
                              f"model wants {expected[path]} at {'/'.join(path)}")
            continue
        params[path] = array
    unexpected = sorted(set(state) - set(by_key))
    if missing or unexpected or mismatched:
        lines = [f"{what} state dict does not match the config:"]
        lines += [f"  missing key: {k}" for k in missing]
        lines += [f"  unexpected key: {k}" for k in unexpected]
        lines += [f"  shape mismatch: {m}" for m in mismatched]
        raise ClipConversionError("\n".join(lines))
    return traverse_util.unflatten_dict(params)


def convert_clip_image(state: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    """Maps `clip_image_enc.pt`'s state dict onto `ImageEncoder` params.

    Args:
      state: flat {reference key: array} (numpy arrays or CPU tensors).
      config: a config whose `clip` section describes the checkpoint.

    Returns:
      The encoder's params tree ({"input": ..., "block_0": ..., "output": ...}),
      float32 numpy arrays, for `{"params": tree}` of `image_encoder_from_config`.

    Raises:
      ClipConversionError: listing missing/unexpected keys and shape mismatches.
    """
    encoder = clip_model.image_encoder_from_config(config)
    size = config.clip.image_size
    expected = _expected_shapes(encoder, jnp.zeros((1, size, size, 3), jnp.float32),
                                jnp.zeros((1,), jnp.int32))
    return _map_state(state, expected, "CLIP image encoder")


def convert_clip_text(state: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    """Maps `clip_text_enc.pt`'s state dict onto `TextEncoder` params.

    Args and Returns as `convert_clip_image`, for `text_encoder_from_config`.
    """
    encoder = clip_model.text_encoder_from_config(config)
    length = config.clip.max_text_len
    expected = _expected_shapes(encoder, jnp.zeros((1, length), jnp.int32),
                                jnp.ones((1,), jnp.int32))
    return _map_state(state, expected, "CLIP text encoder")


def assemble_clip_params(image_params: dict, text_params: dict,
                         config: ml_collections.ConfigDict) -> dict:
    """The `NoisedCLIP` variables from both encoders' params.

    The released checkpoints hold no logit scale (glide-text2im sets it to
    log(config logit_scale) and never trains it), so it comes from
    `config.clip.logit_scale`.

    Returns:
      {"params": {"image_encoder": ..., "text_encoder": ..., "logit_scale": ()}}
      for `create_clip(config).apply`.
    """
    logit_scale = np.asarray(math.log(config.clip.logit_scale), dtype=np.float32)
    return {"params": {"image_encoder": image_params, "text_encoder": text_params,
                       "logit_scale": logit_scale}}


def convert_clip(image_state: Mapping[str, Any], text_state: Mapping[str, Any],
                 config: ml_collections.ConfigDict) -> dict:
    """Both released CLIP state dicts -> `NoisedCLIP` variables ({"params": ...})."""
    return assemble_clip_params(convert_clip_image(image_state, config),
                                convert_clip_text(text_state, config), config)
