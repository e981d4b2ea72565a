"""Validation: `validate(config)` checks types and ranges and raises `ConfigError`
naming the key at fault, so a bad value fails when the config is loaded."""

from __future__ import annotations

import difflib
import math
from typing import Any

import ml_collections

from glide_jax.config.defaults import (ATTENTION_IMPLS, DATASETS, DTYPES, LR_SCHEDULES, MESH_AXES, MODEL_KINDS,
                                       NOISE_SCHEDULES, SAMPLERS, TOKENIZERS, ConfigError, base_config,
                                       image_size)


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config.{key} = {value!r}: {why}", key=key, detail=f"{value!r}: {why}")


def _check_choice(config, key: str, choices) -> None:
    value = _get(config, key)
    if value not in choices:
        _fail(key, value, f"must be one of {', '.join(map(str, choices))}")


def _check_positive_int(config, key: str, allow_none: bool = False) -> None:
    value = _get(config, key)
    if value is None and allow_none:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        _fail(key, value, "must be a positive integer")


def _check_int_tuple(config, key: str) -> None:
    value = _get(config, key)
    if not isinstance(value, (tuple, list)) or not value:
        _fail(key, value, "must be a non-empty tuple of integers")
    if not all(isinstance(v, int) and v > 0 for v in value):
        _fail(key, value, "must hold positive integers")


def _get(config, key: str):
    node = config
    for part in key.split("."):
        if part not in node:
            raise ConfigError(f"config.{key} is missing")
        node = node[part]
    return node



def _check_fraction(config, key: str, allow_none: bool = False, upper_open: bool = False) -> None:
    value = _get(config, key)
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value <= 1.0 or (upper_open and value == 1.0):
        _fail(key, value, "must be a number in [0, 1" + (")" if upper_open else "]"))


def _validate_data(config) -> None:
    """Checks config.data (see data_defaults)."""
    _check_choice(config, "data.dataset", DATASETS)
    for key in ("data.batch_size", "data.shuffle_buffer", "data.prefetch", "data.shapes_train_size",
                "data.shapes_validation_size", "data.shapes_resolution", "data.mask_max_strokes",
                "data.folder_max_short_side"):
        _check_positive_int(config, key)
    for key in ("data.low_res_size", "data.num_threads"):
        _check_positive_int(config, key, allow_none=True)
    max_objects = _get(config, "data.shapes_max_objects")
    if not isinstance(max_objects, int) or isinstance(max_objects, bool) or not 1 <= max_objects <= 3:
        _fail("data.shapes_max_objects", max_objects, "must be 1, 2 or 3")
    seed = _get(config, "data.shapes_seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        _fail("data.shapes_seed", seed, "must be a non-negative integer")
    for key in ("data.random_crop", "data.random_flip"):
        if not isinstance(_get(config, key), bool):
            _fail(key, _get(config, key), "must be True or False")
    _check_fraction(config, "data.caption_dropout", allow_none=True)
    _check_fraction(config, "data.mask_rect_prob")
    _check_fraction(config, "data.folder_validation_fraction", upper_open=True)
    _check_fraction(config, "data.mask_min_fraction")
    _check_fraction(config, "data.mask_max_fraction")
    if config.data.mask_min_fraction > config.data.mask_max_fraction:
        _fail("data.mask_min_fraction", config.data.mask_min_fraction, "must not exceed data.mask_max_fraction")
    if config.data.dataset == "folder" and not config.data.folder_path:
        _fail("data.folder_path", config.data.folder_path, "is required with data.dataset='folder'")
    if config.data.dataset == "folder" and config.data.folder_max_short_side < image_size(config):
        _fail("data.folder_max_short_side", config.data.folder_max_short_side,
              f"is below the training image side {image_size(config)}: every image would be stored smaller "
              "and upscaled")
    if config.data.dataset == "tfds":
        for key in ("data.tfds_name", "data.image_key", "data.text_key"):
            if not isinstance(_get(config, key), str) or not _get(config, key):
                _fail(key, _get(config, key), "must be a non-empty string with data.dataset='tfds'")


def _check_number(config, key: str, low: float, high: float, allow_none: bool = False) -> None:
    value = _get(config, key)
    if value is None and allow_none:
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        _fail(key, value, f"must be a number in [{low}, {high}]")


def _validate_optim(config) -> None:
    """Checks config.optim (see optim_defaults)."""
    _check_number(config, "optim.learning_rate", 0.0, float("inf"))
    for key in ("optim.b1", "optim.b2", "optim.end_learning_rate_factor"):
        _check_number(config, key, 0.0, 1.0)
    _check_number(config, "optim.eps", 0.0, 1.0)
    _check_number(config, "optim.weight_decay", 0.0, 10.0)
    _check_number(config, "optim.grad_clip_norm", 1e-12, float("inf"), allow_none=True)
    warmup = _get(config, "optim.warmup_steps")
    if not isinstance(warmup, int) or isinstance(warmup, bool) or warmup < 0:
        _fail("optim.warmup_steps", warmup, "must be a non-negative integer")
    _check_choice(config, "optim.schedule", LR_SCHEDULES)
    rates = _get(config, "optim.ema_rates")
    if not isinstance(rates, (tuple, list)) or not rates:
        _fail("optim.ema_rates", rates, "must be a non-empty tuple of rates in [0, 1)")
    if not all(isinstance(r, (int, float)) and 0.0 <= r < 1.0 for r in rates):
        _fail("optim.ema_rates", rates, "must hold rates in [0, 1)")
    if not isinstance(_get(config, "optim.ema_warmup"), bool):
        _fail("optim.ema_warmup", _get(config, "optim.ema_warmup"), "must be True or False")
    _check_positive_int(config, "optim.grad_accum_steps")


def _validate_distributed(config) -> None:
    """Checks the multi-host keys of config.train."""
    address = _get(config, "train.coordinator_address")
    if address is not None and (not isinstance(address, str) or not address.rpartition(":")[2].isdigit()):
        _fail("train.coordinator_address", address, "must be None or 'host:port'")
    _check_positive_int(config, "train.num_processes", allow_none=True)
    process_id = _get(config, "train.process_id")
    if process_id is None:
        return
    count = _get(config, "train.num_processes")
    if not isinstance(process_id, int) or isinstance(process_id, bool) or process_id < 0:
        _fail("train.process_id", process_id, "must be None or a non-negative integer")
    if count is not None and process_id >= count:
        _fail("train.process_id", process_id, f"must be below train.num_processes = {count}")


def _validate_train(config) -> None:
    """Checks config.train (see train_defaults)."""
    for key in ("train.num_steps", "train.log_every", "train.checkpoint_every",
                "train.keep_checkpoints", "train.sample_steps"):
        _check_positive_int(config, key)
    _check_positive_int(config, "train.sample_every", allow_none=True)
    _check_positive_int(config, "train.eval_every", allow_none=True)
    _check_positive_int(config, "train.eval_batches")
    split = _get(config, "train.eval_split")
    if not isinstance(split, str) or not split.strip():
        _fail("train.eval_split", split, "must be the name of a dataset split, such as 'validation'")
    seed = _get(config, "train.seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        _fail("train.seed", seed, "must be an integer in [0, 2**32): a PRNG key holds 32 bits")
    prompts = _get(config, "train.sample_prompts")
    if not isinstance(prompts, (tuple, list)) or not prompts or not all(isinstance(p, str) for p in prompts):
        _fail("train.sample_prompts", prompts, "must be a non-empty tuple of strings")
    _check_choice(config, "train.sample_sampler", SAMPLERS)
    _check_number(config, "train.sample_guidance_scale", 0.0, float("inf"))
    for key in ("train.async_checkpointing", "train.export_ema", "train.distributed", "train.progress_bar",
                "train.strict_data_order"):
        if not isinstance(_get(config, key), bool):
            _fail(key, _get(config, key), "must be True or False")
    _validate_distributed(config)
    init_from = _get(config, "train.init_from")
    if init_from is not None and (not isinstance(init_from, str) or not init_from):
        _fail("train.init_from", init_from, "must be None or a directory path")
    if config.data.batch_size % config.optim.grad_accum_steps:
        _fail("optim.grad_accum_steps", config.optim.grad_accum_steps, "must divide data.batch_size")


def _validate_mesh(config) -> None:
    """Checks config.mesh (see mesh_defaults)."""
    _check_positive_int(config, "mesh.data", allow_none=True)
    _check_positive_int(config, "mesh.fsdp")
    _check_positive_int(config, "mesh.tensor")
    rules = _get(config, "mesh.rules")
    if not isinstance(rules, (tuple, list)):
        _fail("mesh.rules", rules, "must be a tuple of (logical name, mesh axes) pairs")
    for rule in rules:
        if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
            _fail("mesh.rules", rule, "each rule must be a (logical name, mesh axes) pair")
        axes = rule[1] if isinstance(rule[1], (tuple, list)) else (rule[1],)
        if any(axis is not None and axis not in MESH_AXES for axis in axes):
            _fail("mesh.rules", rule, f"mesh axes must be among {', '.join(MESH_AXES)} or None")
    if not isinstance(_get(config, "mesh.fsdp_fallback"), bool):
        _fail("mesh.fsdp_fallback", config.mesh.fsdp_fallback, "must be True or False")


def validate_sample(config) -> None:
    """Checks config.sample (see sample_defaults)."""
    for key in ("sample.steps", "sample.upsample_steps"):
        value = _get(config, key)
        if not isinstance(value, str) or not value.strip():
            _fail(key, value, 'must be a respacing string such as "100", "ddim50" or "fast27"')
    for key in ("sample.sampler", "sample.upsample_sampler"):
        _check_choice(config, key, SAMPLERS)
    for key in ("sample.guidance_scale", "sample.clip_guidance_scale"):
        value = _get(config, key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < math.inf:
            _fail(key, value, "must be a finite non-negative number")
    temp = _get(config, "sample.upsample_temp")
    if not isinstance(temp, (int, float)) or isinstance(temp, bool) or not 0 < temp < math.inf:
        _fail("sample.upsample_temp", temp, "must be a finite positive number")
    _check_positive_int(config, "sample.batch_size")
    seed = _get(config, "sample.seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        _fail("sample.seed", seed, "must be an integer in [0, 2**32): a PRNG key holds 32 bits")


def check_keys(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError for a key or section `base_config()` does not have, or a section missing.

    For configs built in Python: `config.train.num_step = 2` (a typo) would
    otherwise add a new key and train with the default `num_steps`.
    """
    reference = base_config()
    missing = [name for name in reference if name not in config]
    if missing:
        raise ConfigError(f"config has no section {missing[0]!r} (start from glide_jax.config.base_config())")
    _check_known(config, reference, "")


def did_you_mean(key: str, section: ml_collections.ConfigDict, prefix: str) -> str:
    """The hint " (did you mean PREFIXKEY?)" for a misspelt key: its closest in `section`, or ""."""
    close = difflib.get_close_matches(key, list(section.keys()), n=1)
    return f" (did you mean {prefix}{close[0]}?)" if close else ""


def _check_known(node: ml_collections.ConfigDict, reference: ml_collections.ConfigDict, prefix: str) -> None:
    for key in node:
        path = f"{prefix}{key}"
        if key not in reference:
            raise ConfigError(f"config.{path} is not a setting glide-jax knows{did_you_mean(key, reference, prefix)}")
        value, expected = node[key], reference[key]
        if isinstance(value, ml_collections.ConfigDict) and isinstance(expected, ml_collections.ConfigDict):
            _check_known(value, expected, f"{path}.")


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks the sections this module defines; raises ConfigError naming the key.

    Returns the config unchanged so calls can be chained.
    """
    _check_choice(config, "model.kind", MODEL_KINDS)
    for key in ("model.image_size", "model.model_channels", "model.num_res_blocks"):
        _check_positive_int(config, key)
    _check_int_tuple(config, "model.channel_mult")
    halvings = len(config.model.channel_mult) - 1
    if config.model.kind != "clip" and config.model.image_size % 2**halvings:
        _fail("model.image_size", config.model.image_size,
              f"must be divisible by {2**halvings}: the U-Net halves it {halvings} times (model.channel_mult "
              f"has {halvings + 1} levels)")
    attn = _get(config, "model.attention_resolutions")
    if not isinstance(attn, (tuple, list)):
        _fail("model.attention_resolutions", attn, "must be a tuple of pixel sizes")
    _check_positive_int(config, "model.num_heads")
    _check_positive_int(config, "model.num_head_channels", allow_none=True)
    _check_positive_int(config, "model.num_heads_upsample", allow_none=True)
    dropout = _get(config, "model.dropout")
    if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        _fail("model.dropout", dropout, "must be in [0, 1)")
    _check_choice(config, "model.dtype", DTYPES)
    _check_choice(config, "model.attention_impl", ATTENTION_IMPLS)
    _check_positive_int(config, "model.norm_groups")
    widths = [config.model.model_channels * mult for mult in config.model.channel_mult]
    if any(width % config.model.norm_groups for width in widths):
        _fail("model.norm_groups", config.model.norm_groups,
              f"must divide every level's width {widths} (model.model_channels x model.channel_mult)")
    head_ch = config.model.num_head_channels
    if head_ch is not None and config.model.model_channels % head_ch:
        _fail("model.num_head_channels", head_ch, "must divide model.model_channels")
    for key in ("text.text_ctx", "text.xf_layers", "text.xf_heads", "text.n_vocab"):
        _check_positive_int(config, key)
    _check_positive_int(config, "text.xf_width")
    if config.text.xf_width % config.text.xf_heads:
        _fail("text.xf_heads", config.text.xf_heads, "must divide text.xf_width")
    _check_choice(config, "text.tokenizer", TOKENIZERS)
    if config.text.tokenizer == "sentencepiece" and not config.text.tokenizer_path:
        _fail("text.tokenizer_path", None, "is required with text.tokenizer='sentencepiece'")
    _check_positive_int(config, "diffusion.steps")
    if config.diffusion.steps < 2:
        _fail("diffusion.steps", config.diffusion.steps, "must be at least 2 (GLIDE uses 1000)")
    _check_choice(config, "diffusion.noise_schedule", NOISE_SCHEDULES)
    if config.model.kind == "clip":
        validate_clip(config)
    # Sampling keeps only the network sections; the others are checked when present.
    for section, check in (("data", _validate_data), ("optim", _validate_optim), ("train", _validate_train),
                           ("mesh", _validate_mesh), ("sample", validate_sample)):
        if section in config:
            check(config)
    return config


CLIP_INT_KEYS = ("image_size", "patch_size", "n_embd", "n_head_state_image", "n_head_image",
                  "n_xf_blocks_image", "n_head_state_text", "n_head_text", "n_xf_blocks_text",
                  "n_vocab", "max_text_len", "n_timesteps")


def validate_clip(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks the `clip` section; raises ConfigError naming the bad key.

    Returns the config unchanged so calls can be chained.
    """
    for key in CLIP_INT_KEYS:
        _check_positive_int(config, f"clip.{key}")
    if config.clip.image_size % config.clip.patch_size:
        _fail("clip.patch_size", config.clip.patch_size, "must divide clip.image_size")
    scale = _get(config, "clip.logit_scale")
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or scale <= 0:
        _fail("clip.logit_scale", scale, "must be a positive number")
    _check_choice(config, "model.dtype", DTYPES)
    return config
