"""Model configs the benchmarks run: the released presets, or tiny --smoke ones.

The released sizes come from `configs/glide_base.py` (385M parameters with
the text transformer) and `configs/glide_upsample.py` (398M). The smoke
configs keep every code path (text transformer, attention, guidance, the
upsampler's low-res input) at a size that compiles in seconds on a CPU.
"""

from __future__ import annotations

import ml_collections

from benchmarks import harness
from glide_jax import config as config_lib

PRESETS = {"base": "configs/glide_base.py", "upsample": "configs/glide_upsample.py"}


def smoke_config(kind: str) -> ml_collections.ConfigDict:
    """A seconds-on-CPU stand-in of the released `kind` ("base" or "upsample") model."""
    config = config_lib.base_config()
    m, t = config.model, config.text
    m.kind = kind
    m.image_size = 16  # the upsampler goes 4 -> 16 px
    # One level, one block: compiling dominates a smoke run.
    m.model_channels, m.num_res_blocks, m.channel_mult = 32, 1, (1,)  # GroupNorm needs 32 | C
    # Attention at 16 px (self + text tokens) in both models.
    m.attention_resolutions, m.num_head_channels = (16,), 16
    t.text_ctx, t.xf_width, t.xf_layers, t.xf_heads, t.n_vocab = 8, 32, 1, 2, 64
    if kind == "upsample":
        config.diffusion.noise_schedule = "linear"
    return config_lib.validate(config)


def model_config(kind: str, smoke: bool, dtype: str, attention_impl: str = "auto") -> ml_collections.ConfigDict:
    """The released preset of `kind` (or the smoke one) with compute dtype `dtype`."""
    if kind not in PRESETS:
        raise ValueError(f"model kind {kind!r}: the benchmarks know {', '.join(PRESETS)}")
    config = smoke_config(kind) if smoke else config_lib.load_config_file(harness.REPO / PRESETS[kind])
    config.model.dtype = dtype
    config.model.attention_impl = attention_impl
    return config_lib.validate(config)


def resolved_attention(config: ml_collections.ConfigDict) -> str:
    """What `config.model.attention_impl` resolves to for the U-Net's heads on this machine."""
    from glide_jax.models import factory, layers  # jax-heavy; presets stays importable without it

    return layers.attention_implementation(config.model.attention_impl, factory.DTYPES[config.model.dtype],
                                           config.model.num_head_channels or config.model.model_channels)
