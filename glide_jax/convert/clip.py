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
or `core.ConversionError` lists the missing keys, unexpected keys and shape
mismatches (through `core.convert_state`, like the U-Net converter).
"""

from __future__ import annotations

import math
import pathlib
from typing import Any, Mapping

import jax.numpy as jnp
import ml_collections
import numpy as np

from glide_jax.convert import core
from glide_jax.models import clip as clip_model

# Reference leaf names -> Flax leaf names (Affine weight/bias, LayerNorm gain/shift).
_LEAVES = {"w": ("kernel", core.linear_kernel), "b": ("bias", core.identity),
           "g": ("scale", core.identity)}
# Raw parameters of the input blocks, kept under their own names.
_RAW = ("w_t", "w_pos", "w_voc")


def clip_rule(key: str) -> core.Target | None:
    """Where the reference key `key` (e.g. `blocks.block_0.f_attn.f_q.w`) goes.

    Returns None for a key no CLIP encoder has.
    """
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "blocks":
        return None
    parts = parts[1:]
    if parts == ["input", "patch_proj"]:
        return core.Target(("input", "patch_proj", "kernel"), core.conv2d_kernel)
    if len(parts) == 2 and parts[0] == "input" and parts[1] in _RAW:
        return core.Target(tuple(parts))
    if parts[-1] in _LEAVES:
        name, transform = _LEAVES[parts[-1]]
        return core.Target((*parts[:-1], name), transform)
    return None


def convert_clip_image(state: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    """Maps `clip_image_enc.pt`'s state dict onto `ImageEncoder` params.

    Args:
      state: flat {reference key: array}, e.g. from `core.load_state`.
      config: a config whose `clip` section describes the checkpoint.

    Returns:
      The encoder's params tree ({"input": ..., "block_0": ..., "output": ...}),
      float32 numpy arrays, for `{"params": tree}` of `image_encoder_from_config`.

    Raises:
      core.ConversionError: listing missing/unexpected keys and shape mismatches.
    """
    encoder = clip_model.image_encoder_from_config(config)
    size = config.clip.image_size
    template = core.param_template(encoder, {"x": jnp.zeros((1, size, size, 3), jnp.float32),
                                             "t": jnp.zeros((1,), jnp.int32)})
    return _convert(state, template, "image")


def convert_clip_text(state: Mapping[str, Any], config: ml_collections.ConfigDict) -> dict:
    """Maps `clip_text_enc.pt`'s state dict onto `TextEncoder` params.

    Args and Returns as `convert_clip_image`, for `text_encoder_from_config`.
    """
    encoder = clip_model.text_encoder_from_config(config)
    length = config.clip.max_text_len
    template = core.param_template(encoder, {"tokens": jnp.zeros((1, length), jnp.int32),
                                             "lens": jnp.ones((1,), jnp.int32)})
    return _convert(state, template, "text")


def _convert(state: Mapping[str, Any], template: Mapping, which: str) -> dict:
    try:
        return core.convert_state(state, template, clip_rule)
    except core.CheckpointMismatch as exc:  # say which of the two files it was
        raise core.CheckpointMismatch(f"CLIP {which} encoder: {exc}", another_size=exc.another_size) from exc


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


def convert_clip_files(image_path: str | pathlib.Path, text_path: str | pathlib.Path,
                       config: ml_collections.ConfigDict) -> dict:
    """`clip_image_enc.pt` + `clip_text_enc.pt` (or `.npz`) -> `NoisedCLIP` variables."""
    return convert_clip(core.load_state(image_path), core.load_state(text_path), config)
