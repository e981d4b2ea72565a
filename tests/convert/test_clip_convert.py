"""CLIP checkpoint conversion: key mapping, error reports, .pt loading, yaml config."""

import json

import numpy as np
import pytest

from glide_jax import config as config_lib
from glide_jax.convert import clip as clip_convert
from glide_jax.convert import core


@pytest.fixture(scope="module")
def setup(fixtures_dir):
    options = json.loads((fixtures_dir / "clip_options.json").read_text())
    config = config_lib.clip_config_from_glide(options["config"])
    image = dict(np.load(fixtures_dir / "clip_image_enc_state.npz"))
    text = dict(np.load(fixtures_dir / "clip_text_enc_state.npz"))
    return config, image, text


def test_config_from_glide_yaml(fixtures_dir):
    yaml = json.loads((fixtures_dir / "clip_options.json").read_text())["config"]
    config = config_lib.clip_config_from_glide(yaml)
    assert config.model.kind == "clip"
    assert config.model.image_size == yaml["image_size"] == config.clip.image_size
    assert config.clip.n_head_state_text == yaml["n_head_state_text"]
    assert config.clip.logit_scale == yaml["logit_scale"]
    with pytest.raises(config_lib.ConfigError, match="n_vocab"):
        config_lib.clip_config_from_glide({k: v for k, v in yaml.items() if k != "n_vocab"})
    with pytest.raises(config_lib.ConfigError, match="clip.patch_size"):
        config_lib.clip_config_from_glide({**yaml, "patch_size": 5})


def test_layouts_and_every_key_consumed(setup):
    config, image, text = setup
    params = clip_convert.convert_clip(image, text, config)["params"]
    img = params["image_encoder"]
    np.testing.assert_array_equal(img["block_1"]["f_attn"]["f_q"]["kernel"],
                                  image["blocks.block_1.f_attn.f_q.w"].T)
    np.testing.assert_array_equal(img["input"]["patch_proj"]["kernel"],
                                  image["blocks.input.patch_proj"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(img["output"]["ln"]["scale"], image["blocks.output.ln.g"])
    np.testing.assert_array_equal(params["text_encoder"]["input"]["w_voc"], text["blocks.input.w_voc"])
    n_leaves = lambda tree: sum(n_leaves(v) for v in tree.values()) if isinstance(tree, dict) else 1
    assert n_leaves(img) == len(image)
    assert n_leaves(params["text_encoder"]) == len(text)
    assert params["logit_scale"].dtype == np.float32


def test_missing_unexpected_and_mismatched_keys_are_listed(setup):
    config, image, _ = setup
    broken = dict(image)
    del broken["blocks.block_0.f_attn.f_k.w"]
    broken["blocks.block_0.f_attn.f_k.b"] = np.zeros(3, np.float32)  # released files have none
    broken["blocks.input.w_t"] = image["blocks.input.w_t"][:10]
    broken["blocks.input.pred_state"] = np.zeros(32, np.float32)  # the un-noised CLIP's token
    with pytest.raises(core.ConversionError) as info:
        clip_convert.convert_clip_image(broken, config)
    message = str(info.value)
    assert message.startswith("CLIP image encoder:")
    assert "block_0/f_attn/f_k/kernel" in message.split("missing")[1].splitlines()[0]
    unexpected = message.split("unexpected")[1].splitlines()[0]
    assert "blocks.block_0.f_attn.f_k.b" in unexpected and "blocks.input.pred_state" in unexpected
    assert "blocks.input.w_t (10, 32)" in message.split("shape mismatches")[1]


def test_wrong_config_is_reported(setup):
    config, _, text = setup
    bigger = config_lib.clip_config_from_glide({**config.clip.to_dict(), "n_xf_blocks_text": 3})
    with pytest.raises(core.ConversionError, match="(?s)CLIP text encoder: .*missing.*block_2/f_attn/ln/scale"):
        clip_convert.convert_clip_text(text, bigger)


def test_pt_checkpoint_converts_like_npz(fixtures_dir, setup):
    pytest.importorskip("torch")
    config, _, text = setup
    from_pt = clip_convert.convert_clip_text(core.load_state(fixtures_dir / "clip_text_enc.pt"), config)
    from_npz = clip_convert.convert_clip_text(text, config)
    np.testing.assert_array_equal(from_pt["block_1"]["f_mlp"]["f_2"]["kernel"],
                                  from_npz["block_1"]["f_mlp"]["f_2"]["kernel"])
    np.testing.assert_array_equal(from_pt["output"]["f"]["kernel"], text["blocks.output.f.w"].T)


def test_rule_maps_reference_names():
    assert clip_convert.clip_rule("blocks.input.w_t").path == ("input", "w_t")
    assert clip_convert.clip_rule("blocks.input.patch_proj").path == ("input", "patch_proj", "kernel")
    target = clip_convert.clip_rule("blocks.output.f.w")
    assert target.path == ("output", "f", "kernel")
    np.testing.assert_array_equal(target.transform(np.arange(6.0).reshape(2, 3)),
                                  np.arange(6.0).reshape(2, 3).T)
    assert clip_convert.clip_rule("blocks.block_0.f_mlp.ln.g").path == ("block_0", "f_mlp", "ln", "scale")
    assert clip_convert.clip_rule("transformer.resblocks.0.ln_1.weight") is None
