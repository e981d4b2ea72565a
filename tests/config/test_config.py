"""Config defaults, validation errors and glide-text2im option conversion."""

import json
import pathlib
import re

import pytest

from glide_jax import config as config_lib


def test_defaults_validate():
    config = config_lib.validate(config_lib.base_config())
    assert config.model.channel_mult == (1, 2, 3, 4)
    assert config.text.n_vocab == config_lib.GPT2_VOCAB_SIZE


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("model.kind", "big", "config.model.kind = 'big'"),
        ("model.dropout", 1.5, "config.model.dropout"),
        ("diffusion.noise_schedule", "cosine", "config.diffusion.noise_schedule"),
        ("model.num_head_channels", 7, "must divide model.model_channels"),
        ("data.shapes_max_objects", 4, "config.data.shapes_max_objects = 4"),
        ("model.norm_groups", 256, "config.model.norm_groups = 256"),  # 192 channels at level 0
        ("model.attention_impl", "flash", "config.model.attention_impl = 'flash'"),
        ("train.coordinator_address", "host0", "config.train.coordinator_address = 'host0'"),  # no port
        ("train.num_processes", 0, "config.train.num_processes = 0"),
        # base_config's channel_mult (1, 2, 3, 4) halves the image three times.
        ("model.image_size", 36, "config.model.image_size = 36: must be divisible by 8"),
        ("diffusion.steps", 1, "config.diffusion.steps = 1: must be at least 2"),
    ],
)
def test_bad_value_names_key(key, value, message):
    config = config_lib.base_config()
    section, field = key.split(".")
    config[section][field] = value
    with pytest.raises(config_lib.ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        config_lib.validate(config)


def test_process_id_must_be_below_process_count():
    config = config_lib.base_config()
    config.train.num_processes, config.train.process_id = 2, 2
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.process_id = 2: must be below"):
        config_lib.validate(config)
    config.train.process_id = 1
    config_lib.validate(config)


def test_glide_options_round_trip(fixtures_dir):
    options = json.loads((fixtures_dir / "base_options.json").read_text())["model_and_diffusion_options"]
    config = config_lib.config_from_glide_options(options)
    assert config.model.kind == "base"
    assert config.model.channel_mult == (1, 1, 2)
    assert config.model.attention_resolutions == (16, 8)
    assert config.model.num_head_channels == 16
    assert config.model.num_heads_upsample is None
    assert config.text.text_ctx == 16 and config.text.xf_layers == 2
    assert config.diffusion.timestep_respacing is None


def test_glide_options_kinds(fixtures_dir):
    kinds = {}
    for case in ("upsample", "inpaint", "upsample_inpaint"):
        options = json.loads((fixtures_dir / f"{case}_options.json").read_text())
        kinds[case] = config_lib.config_from_glide_options(options["model_and_diffusion_options"]).model.kind
    assert kinds == {"upsample": "upsample", "inpaint": "inpaint", "upsample_inpaint": "upsample_inpaint"}


def test_kind_sizes_follow_the_config():
    """The sizes the pipeline, the losses, the models and the benchmarks all read from one place."""
    from glide_jax.models import factory

    config = config_lib.base_config()
    config.model.kind, config.model.image_size = "upsample", 64
    assert config_lib.low_res_size(config) == 16  # a quarter of the output by default
    config.data.low_res_size = 32
    assert config_lib.low_res_size(config) == 32
    assert factory.example_inputs(config)["low_res"].shape == (1, 32, 32, 3)
    assert config_lib.text_length(config) == config.text.text_ctx
    config.model.kind = "inpaint"
    assert config_lib.low_res_size(config) is None and "low_res" not in factory.example_inputs(config)
    config.model.kind = "clip"
    assert config_lib.image_size(config) == config.clip.image_size
    assert config_lib.text_length(config) == config.clip.max_text_len


def test_overrides_of_the_argparse_tools():
    rest, overrides = config_lib.split_overrides(
        ["cfg.py", "--config.model.model_channels=128", "--config.text.tokenizer_path", "a b.model", "-v"])
    assert rest == ["cfg.py", "-v"] and overrides == ["model.model_channels=128", "text.tokenizer_path=a b.model"]
    config = config_lib.apply_overrides(config_lib.base_config(), [
        *overrides, "model.channel_mult=1,2", "model.use_scale_shift_norm=false", "optim.learning_rate=3e-4",
        "diffusion.timestep_respacing=100", "train.sample_every=None", "model.attention_resolutions=(8,)"])
    assert (config.model.model_channels, config.text.tokenizer_path) == (128, "a b.model")
    assert config.model.channel_mult == (1, 2) and config.model.use_scale_shift_norm is False
    assert config.optim.learning_rate == 3e-4 and config.diffusion.timestep_respacing == "100"
    assert config.train.sample_every is None and config.model.attention_resolutions == (8,)
    config = config_lib.apply_overrides(config_lib.base_config(), ["train.sample_prompts=a red circle, a cat"])
    assert config.train.sample_prompts == ("a red circle", "a cat")
    for override, message in [
        ("model.chanels=1", "config.model.chanels does not exist"),
        ("modl.x=1", "config has no section 'modl'"),
        ("model.num_res_blocks=x", "config.model.num_res_blocks is of type int ('x' is not a Python literal)"),
        ("model.num_res_blocks=2.5", "config.model.num_res_blocks is of type int"),
        ("model.num_res_blocks", "no value (write --config.model.num_res_blocks=VALUE)"),
        ("model.use_scale_shift_norm=maybe",
         "config.model.use_scale_shift_norm is of type bool ('maybe' is not one of True/False, 1/0, yes/no)"),
        ("train=None", "config.train is a section; set one of its keys, e.g. --config.train."),
    ]:
        with pytest.raises(config_lib.ConfigError, match=re.escape(f"--config.{override}: {message}")):
            config_lib.apply_overrides(config_lib.base_config(), [override])


def test_boolean_overrides_take_a_bare_flag_or_a_word():
    rest, overrides = config_lib.split_overrides(
        ["--config.train.distributed", "--workdir", "w", "--config.optim.learning_rate", "-1e-4",
         "--config.mesh.fsdp_fallback"])
    assert rest == ["--workdir", "w"]
    assert overrides == ["train.distributed", "optim.learning_rate=-1e-4", "mesh.fsdp_fallback"]
    config = config_lib.apply_overrides(config_lib.base_config(), overrides)
    assert config.train.distributed is True and config.mesh.fsdp_fallback is True
    assert config.optim.learning_rate == -1e-4
    for text, value in [("0", False), ("yes", True), ("NO", False), ("1", True), ("False", False)]:
        config = config_lib.apply_overrides(config_lib.base_config(), [f"train.distributed={text}"])
        assert config.train.distributed is value, text


def test_keys_set_in_python_must_exist():
    config = config_lib.base_config()
    config.train.num_step = 2  # a typo: would train the default num_steps
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.num_step is not a setting glide-jax knows "
                                                     r"\(did you mean train\.num_steps\?\)"):
        config_lib.check_keys(config)
    config = config_lib.base_config()
    del config["mesh"]
    with pytest.raises(config_lib.ConfigError, match="config has no section 'mesh'"):
        config_lib.check_keys(config)
    for path in sorted((pathlib.Path(__file__).resolve().parents[2] / "configs").glob("*.py")):
        config_lib.check_keys(config_lib.load_config_file(str(path)))  # the presets add nothing unknown
