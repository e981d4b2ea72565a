"""Builds the network a config describes, and example inputs to initialise it."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from glide_jax import config as config_lib
from glide_jax.models.unet import IN_CHANNELS, Text2ImUNet

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def create_model(config: ml_collections.ConfigDict):
    """Returns the Flax module for `config.model.kind`.

    Args:
      config: a full config (sections `model` and `text`; `clip` for kind "clip").

    Returns:
      A `Text2ImUNet` for base/upsample/inpaint/upsample_inpaint, or the noised
      CLIP of `glide_jax.models.clip` for "clip".
    """
    m, t = config.model, config.text
    if m.kind == "clip":
        from glide_jax.models import clip  # only CLIP users need it

        return clip.create_clip(config)
    if m.dtype not in DTYPES:
        raise ValueError(f"config.model.dtype = {m.dtype!r}: must be one of {', '.join(DTYPES)}")
    return Text2ImUNet(
        kind=m.kind,
        image_size=m.image_size,
        model_channels=m.model_channels,
        num_res_blocks=m.num_res_blocks,
        channel_mult=tuple(m.channel_mult),
        attention_resolutions=tuple(m.attention_resolutions),
        num_heads=m.num_heads,
        num_head_channels=m.num_head_channels,
        num_heads_upsample=m.num_heads_upsample,
        dropout=float(m.dropout),
        use_scale_shift_norm=m.use_scale_shift_norm,
        resblock_updown=m.resblock_updown,
        norm_groups=m.norm_groups,
        text_ctx=t.text_ctx,
        xf_width=t.xf_width,
        xf_layers=t.xf_layers,
        xf_heads=t.xf_heads,
        xf_final_ln=t.xf_final_ln,
        xf_padding=t.xf_padding,
        n_vocab=t.n_vocab,
        dtype=DTYPES[m.dtype],
        remat=bool(m.get("remat", False)),
        attention_impl=m.get("attention_impl", "auto"),
    )


def abstract_params(config: ml_collections.ConfigDict, model: nn.Module | None = None) -> Any:
    """The params tree of `model` (default `create_model(config)`) as unboxed ShapeDtypeStructs.

    Traced with `jax.eval_shape`: nothing is allocated, so the paper-size
    models take seconds.
    """
    model = create_model(config) if model is None else model
    inputs = example_inputs(config, 1)
    return nn.meta.unbox(jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs)))["params"]


def example_inputs(config: ml_collections.ConfigDict, batch_size: int = 1) -> dict:
    """Zero-valued keyword arguments for `model.init` (and `jax.eval_shape`).

    Returns:
      {"x", "timesteps", "tokens", "mask"} plus "low_res" (upsample kinds) and
      "inpaint_image"/"inpaint_mask" (inpaint kinds); for kind "clip" whatever
      `glide_jax.models.clip.example_inputs` returns.
    """
    m, t = config.model, config.text
    if m.kind == "clip":
        from glide_jax.models import clip

        return clip.example_inputs(config, batch_size)
    if m.kind not in IN_CHANNELS:
        raise ValueError(f"config.model.kind = {m.kind!r}: no U-Net variant of that name")
    size = m.image_size
    inputs = {
        "x": jnp.zeros((batch_size, size, size, 3), jnp.float32),
        "timesteps": jnp.zeros((batch_size,), jnp.int32),
        "tokens": jnp.zeros((batch_size, t.text_ctx), jnp.int32),
        "mask": jnp.zeros((batch_size, t.text_ctx), bool),
    }
    if m.kind in config_lib.UPSAMPLE_KINDS:
        low = config_lib.low_res_size(config)
        inputs["low_res"] = jnp.zeros((batch_size, low, low, 3), jnp.float32)
    if m.kind in config_lib.INPAINT_KINDS:
        inputs["inpaint_image"] = jnp.zeros((batch_size, size, size, 3), jnp.float32)
        inputs["inpaint_mask"] = jnp.zeros((batch_size, size, size, 1), jnp.float32)
    return inputs
