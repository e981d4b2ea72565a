"""The options JSON of `python -m glide_jax.convert`: unknown keys and mistyped values are refused."""

import json

import pytest

from glide_jax.convert import core
from glide_jax.convert import options as options_lib


def _write(tmp_path, name, raw):
    path = tmp_path / name
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture()
def base_raw(fixtures_dir):
    return json.loads((fixtures_dir / "base_options.json").read_text())


def _with(raw, **changes):
    options = {**raw["model_and_diffusion_options"], **changes}
    return {**raw, "model_and_diffusion_options": options}


def test_misspelt_and_unknown_keys_are_named_with_a_suggestion(base_raw, tmp_path):
    options = dict(base_raw["model_and_diffusion_options"])
    options["num_head_channel"] = options.pop("num_head_channels")
    options["noise_schedul"] = "linear"
    options["bogus_key"] = 1
    path = _write(tmp_path, "typo.json", {**base_raw, "model_and_diffusion_options": options})
    with pytest.raises(core.ConversionError) as info:
        options_lib.options_config(path, "base")
    message = str(info.value)
    assert "'num_head_channel' (did you mean 'num_head_channels'?)" in message
    assert "'noise_schedul' (did you mean 'noise_schedule'?)" in message
    assert "'bogus_key'" in message and "typo.json" in message


def test_unknown_key_in_a_bare_clip_yaml_and_under_config(fixtures_dir, tmp_path):
    raw = json.loads((fixtures_dir / "clip_options.json").read_text())
    wrapped = _write(tmp_path, "wrapped.json", {**raw, "config": {**raw["config"], "n_embed": 64}})
    with pytest.raises(core.ConversionError, match=r"'n_embed' \(did you mean 'n_embd'\?\)"):
        options_lib.options_config(wrapped, "clip-image")
    bare = _write(tmp_path, "bare.json", {**raw["config"], "bogus": 1})
    with pytest.raises(core.ConversionError, match="'bogus'"):
        options_lib.options_config(bare, "clip-text")
    # The metadata beside "config" is not the yaml and is not checked.
    assert options_lib.options_config(_write(tmp_path, "ok.json", raw), "clip-text").clip.n_embd == 64


@pytest.mark.parametrize("key, value, valid", [
    ("xf_padding", "false", "true or false"),
    ("num_channels", "abc", "an integer"),
    ("num_channels", 32.5, "an integer"),
    ("channel_mult", "1,x", "a comma string of integers"),
    ("noise_schedule", 1, "a string"),
])
def test_mistyped_values_name_the_key(base_raw, tmp_path, key, value, valid):
    path = _write(tmp_path, "bad.json", _with(base_raw, **{key: value}))
    with pytest.raises(core.ConversionError, match=f"'{key}' must be {valid}"):
        options_lib.options_config(path, "base")


def test_bare_options_with_a_vocabulary_size(base_raw, tmp_path):
    bare = {**base_raw["model_and_diffusion_options"], "tokenizer_n_vocab": 512, "channel_mult": [1, 1, 2]}
    config = options_lib.options_config(_write(tmp_path, "bare.json", bare), "base")
    assert config.text.n_vocab == 512 and config.model.channel_mult == (1, 1, 2)
    assert config.model.num_head_channels == 16 and config.text.xf_padding is True
    with pytest.raises(core.ConversionError, match="'tokenizer_n_vocab' must be an integer"):
        options_lib.options_config(_write(tmp_path, "v.json", {**bare, "tokenizer_n_vocab": "512"}), "base")
