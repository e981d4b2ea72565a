"""Benchmark model configs: the released presets and the smoke stand-ins."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks import presets  # noqa: E402


def test_released_presets_with_compute_dtype():
    base = presets.model_config("base", smoke=False, dtype="bfloat16")
    up = presets.model_config("upsample", smoke=False, dtype="float16")
    assert (base.model.kind, base.model.image_size, base.model.model_channels, base.model.dtype) == (
        "base", 64, 192, "bfloat16")
    assert (up.model.kind, up.model.image_size, up.model.channel_mult, up.model.dtype) == (
        "upsample", 256, (1, 1, 2, 2, 4, 4), "float16")
    assert base.text.xf_layers == 16 and up.diffusion.noise_schedule == "linear"


def test_smoke_configs_are_tiny_but_keep_attention():
    for kind in ("base", "upsample"):
        config = presets.model_config(kind, smoke=True, dtype="bfloat16")
        assert config.model.kind == kind and config.model.image_size == 16
        assert config.model.image_size in config.model.attention_resolutions
        assert config.text.xf_layers == 1 and config.model.dtype == "bfloat16"


def test_unknown_kind_names_itself():
    with pytest.raises(ValueError, match="'inpaint'"):
        presets.model_config("inpaint", smoke=False, dtype="bfloat16")
