"""`python -m glide_jax.convert` and the exported checkpoint format."""

import json

import jax.numpy as jnp
import numpy as np
import pytest

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax.convert import __main__ as cli
from glide_jax.convert import core
from glide_jax.convert.unet import convert_unet
from glide_jax.models import factory
from glide_jax.tools import parity_models
from glide_jax.tools.parity import to_nhwc


def _flat(tree, prefix=()):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _flat(value, prefix + (key,))
        else:
            yield prefix + (key,), value


def test_cli_round_trip(fixtures_dir, tmp_path):
    pytest.importorskip("torch")
    out_dir = tmp_path / "exported"
    lines = []
    code = cli.main([str(fixtures_dir / "base.pt"), "--kind", "base",
                     "--options", str(fixtures_dir / "base_options.json"), "--output", str(out_dir)],
                    out=lines.append)
    assert code == 0 and "1187334 parameters" in lines[-1]
    config, params = checkpoints.load_model(out_dir)
    assert config.model.channel_mult == (1, 1, 2)  # tuples survive JSON
    assert config.text.n_vocab == 512 and config.model.kind == "base"
    expected = convert_unet(core.load_state(fixtures_dir / "base_state.npz"),
                            parity_models.case_config(fixtures_dir, "base"))
    ours = dict(_flat(params))
    assert ours.keys() == dict(_flat(expected)).keys()
    for path, value in _flat(expected):
        np.testing.assert_array_equal(ours[path], value)
    io = np.load(fixtures_dir / "base_io.npz")
    out = factory.create_model(config).apply({"params": params}, to_nhwc(io["x"]),
                                             jnp.asarray(io["timesteps"]), **parity_models.model_kwargs(io))
    np.testing.assert_allclose(out, np.transpose(io["output"], (0, 2, 3, 1)), atol=1e-4)


def test_bare_options_and_kind_mismatch(fixtures_dir, tmp_path, capsys):
    raw = json.loads((fixtures_dir / "upsample_options.json").read_text())
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(raw["model_and_diffusion_options"]))
    config = cli.options_config(bare, "upsample")
    assert config.model.kind == "upsample" and config.text.n_vocab == config_lib.GPT2_VOCAB_SIZE
    lines = []
    code = cli.main([str(fixtures_dir / "upsample_state.npz"), "--kind", "base",
                     "--options", str(fixtures_dir / "upsample_options.json"), "--output", str(tmp_path / "x")],
                    out=lines.append)
    assert code == 2 and "super_res=True" in capsys.readouterr().err and not lines


def test_presets_for_every_kind():
    for kind, (model_kind, _) in cli.KINDS.items():
        assert cli.preset_config(kind).model.kind == model_kind
    assert cli.preset_config("base").model.model_channels == 192


def test_clip_halves_merge(fixtures_dir, tmp_path):
    options = str(fixtures_dir / "clip_options.json")
    out_dir = tmp_path / "clip"
    assert cli.main([str(fixtures_dir / "clip_image_enc_state.npz"), "--kind", "clip-image",
                     "--options", options, "--output", str(out_dir)], out=lambda _: None) == 0
    _, params = checkpoints.load_model(out_dir)
    assert set(params) == {"image_encoder"}
    assert cli.main([str(fixtures_dir / "clip_text_enc_state.npz"), "--kind", "clip-text",
                     "--options", options, "--output", str(out_dir)], out=lambda _: None) == 0
    config, params = checkpoints.load_model(out_dir)
    assert set(params) == {"image_encoder", "text_encoder", "logit_scale"}
    np.testing.assert_allclose(params["logit_scale"], np.log(100.0), rtol=1e-7)
    assert config.model.kind == "clip"
    # Converting an encoder again rewrites it beside the other one.
    assert cli.main([str(fixtures_dir / "clip_text_enc_state.npz"), "--kind", "clip-text",
                     "--options", options, "--output", str(out_dir)], out=lambda _: None) == 0
    assert set(checkpoints.load_model(out_dir)[1]) == {"image_encoder", "text_encoder", "logit_scale"}


def test_output_holding_another_checkpoint_is_not_replaced(fixtures_dir, tmp_path, capsys):
    options = json.loads((fixtures_dir / "clip_options.json").read_text())
    options.setdefault("config", options)["logit_scale"] = 50.0  # a CLIP of another config
    other = tmp_path / "other.json"
    other.write_text(json.dumps(options))
    out_dir = tmp_path / "clip"
    convert = [str(fixtures_dir / "clip_image_enc_state.npz"), "--kind", "clip-image", "--output", str(out_dir)]
    assert cli.main([*convert, "--options", str(fixtures_dir / "clip_options.json")], out=lambda _: None) == 0
    before = (out_dir / checkpoints.PARAMS_FILE).read_bytes()
    assert cli.main([*convert, "--options", str(other)], out=lambda _: None) == 2
    assert "already holds a 'clip' checkpoint of another CLIP config" in capsys.readouterr().err
    assert (out_dir / checkpoints.PARAMS_FILE).read_bytes() == before
    assert cli.main([*convert, "--options", str(other), "--force"], out=lambda _: None) == 0
    assert checkpoints.load_config(out_dir).clip.logit_scale == 50.0
    # A converted test-sized base model warns that the GPT-2 tokenizer does not fit it.
    assert cli.main([str(fixtures_dir / "base_state.npz"), "--kind", "base", "--options",
                     str(fixtures_dir / "base_options.json"), "--output", str(tmp_path / "base")],
                    out=lambda _: None) == 0
    assert "warning: the model has 512 token embeddings but the GPT-2 tokenizer gives ids up to 50256;" in capsys.readouterr().err
    assert cli.main([str(fixtures_dir / "base_state.npz"), "--kind", "upsample", "--options",
                     str(fixtures_dir / "upsample_options.json"), "--output", str(tmp_path / "base")],
                    out=lambda _: None) == 2
    assert "already holds a 'base' checkpoint; choose another --output" in capsys.readouterr().err


def test_save_load_is_bit_exact(tmp_path):
    rng = np.random.default_rng(0)
    params = {"a": {"kernel": rng.normal(size=(3, 4)).astype(np.float32)},
              "b": np.float32(np.pi) * np.ones((2,), np.float32)}
    config = config_lib.base_config()
    checkpoints.save_model(tmp_path, config, {"params": params})
    loaded_config, loaded = checkpoints.load_model(tmp_path)
    np.testing.assert_array_equal(loaded["a"]["kernel"], params["a"]["kernel"])
    assert loaded["b"].dtype == np.float32 and loaded["b"].tobytes() == params["b"].tobytes()
    assert loaded_config.model.attention_resolutions == config.model.attention_resolutions
    assert loaded_config.to_dict() == config.to_dict()


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="nowhere"):
        checkpoints.load_model(tmp_path / "nowhere")
    (tmp_path / "config.json").write_text(config_lib.base_config().to_json())
    with pytest.raises(checkpoints.CheckpointError, match="params.npz"):
        checkpoints.load_model(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(checkpoints.CheckpointError, match="config.json"):
        checkpoints.load_model(tmp_path)


def test_incomplete_options_name_the_missing_keys(fixtures_dir, tmp_path, capsys):
    options = tmp_path / "partial.json"
    options.write_text(json.dumps({"image_size": 32, "num_channels": 32}))
    code = cli.main([str(fixtures_dir / "base_state.npz"), "--kind", "base", "--options", str(options),
                     "--output", str(tmp_path / "x")], out=lambda _: None)
    err = capsys.readouterr().err
    assert code == 2 and "num_res_blocks" in err and "xf_width" in err
    assert not (tmp_path / "x").exists()


def test_loaded_config_is_typed_like_the_defaults(tmp_path):
    saved = json.loads(config_lib.base_config().to_json())
    del saved["model"]["attention_impl"]  # a key added after the file was written
    saved["model"]["dropout"] = 0  # JSON wrote the float as an int
    (tmp_path / "config.json").write_text(json.dumps(saved))
    config = checkpoints.load_config(tmp_path)
    assert config.model.attention_impl == "auto"
    assert isinstance(config.model.dropout, float)
    assert config.train.num_processes is None
    config.train.num_processes = 2  # a None field keeps its type, so overrides can set it
    with pytest.raises(TypeError):
        config.train.num_processes = "two"

    saved["model"]["image_size"] = 6.5
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(checkpoints.CheckpointError, match=r"config\.json.*image_size"):
        checkpoints.load_config(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(checkpoints.CheckpointError, match="JSON object"):
        checkpoints.load_config(tmp_path)
