"""Shared config defaults, validation, and glide-text2im options -> config.

Every experiment file in `configs/` starts from `base_config()` and overrides a
few keys. Each section maps onto one constructor:

  model      -> the U-Net (or, with kind "clip", the noised CLIP; see `clip`)
  text       -> the text transformer and its tokenizer
  clip       -> the noised CLIP encoders (used when model.kind == "clip")
  diffusion  -> glide_jax.diffusion.create_gaussian_diffusion
  data, optim, train, sample, mesh -> input pipeline, optimizer, loop,
                sampler and device mesh.

`validate(config)` checks types and ranges and raises `ConfigError` naming the
offending key. Loading a config has no side effects.
"""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

MODEL_KINDS = ("base", "upsample", "inpaint", "upsample_inpaint", "clip")
NOISE_SCHEDULES = ("linear", "squaredcos_cap_v2")
TOKENIZERS = ("gpt2", "clip", "sentencepiece")
DTYPES = ("float32", "bfloat16", "float16")
GPT2_VOCAB_SIZE = 50257


class ConfigError(ValueError):
    """A config value is missing, of the wrong type or out of range."""


def model_defaults() -> ml_collections.ConfigDict:
    """The U-Net: glide-text2im's released base model (385M with the text)."""
    return ml_collections.ConfigDict(
        dict(
            kind="base",  # base | upsample | inpaint | upsample_inpaint | clip
            image_size=64,  # output resolution in pixels
            model_channels=192,  # base width of the U-Net ("num_channels")
            num_res_blocks=3,  # residual blocks per resolution level
            channel_mult=(1, 2, 3, 4),  # width multiplier per level
            attention_resolutions=(32, 16, 8),  # pixel sizes that get attention
            num_heads=1,  # heads when num_head_channels is None
            num_head_channels=64,  # channels per head; None -> use num_heads
            num_heads_upsample=None,  # decoder heads; None -> same as num_heads
            dropout=0.1,  # dropout in the residual blocks (training only)
            use_scale_shift_norm=True,  # FiLM-style GroupNorm conditioning
            resblock_updown=True,  # resample inside residual blocks
            dtype="float32",  # compute dtype; parameters stay float32
            remat=False,  # rematerialise residual blocks in the backward pass
        )
    )


def text_defaults() -> ml_collections.ConfigDict:
    """The text transformer and its tokenizer."""
    return ml_collections.ConfigDict(
        dict(
            text_ctx=128,  # caption length in tokens, after padding
            xf_width=512,  # transformer width
            xf_layers=16,  # transformer blocks
            xf_heads=8,  # attention heads
            xf_final_ln=True,  # LayerNorm after the last block
            xf_padding=True,  # learned padding embedding where mask is off
            n_vocab=GPT2_VOCAB_SIZE,  # token embedding rows
            tokenizer="gpt2",  # gpt2 | clip | sentencepiece
            tokenizer_path=None,  # SentencePiece model file (sentencepiece only)
        )
    )


def clip_defaults() -> ml_collections.ConfigDict:
    """The noised CLIP of glide-text2im (ViT-B image side, 64 px)."""
    return ml_collections.ConfigDict(
        dict(
            image_size=64,  # input resolution of the image encoder
            patch_size=4,  # ViT patch size
            n_embd=512,  # shared embedding width
            n_head_state_image=64,  # channels per head, image encoder
            n_head_image=12,  # heads, image encoder
            n_xf_blocks_image=12,  # blocks, image encoder
            n_head_state_text=64,  # channels per head, text encoder
            n_head_text=8,  # heads, text encoder
            n_xf_blocks_text=12,  # blocks, text encoder
            n_vocab=49408,  # CLIP BPE vocabulary
            max_text_len=77,  # text context including start and end tokens
            n_timesteps=1000,  # rows of the per-timestep token w_t
            logit_scale=100.0,  # exp(learned log scale) at initialisation
        )
    )


def diffusion_defaults() -> ml_collections.ConfigDict:
    """Gaussian diffusion as GLIDE trained it (improved-DDPM hybrid loss)."""
    return ml_collections.ConfigDict(
        dict(
            steps=1000,  # training diffusion steps
            noise_schedule="squaredcos_cap_v2",  # linear | squaredcos_cap_v2
            learn_sigma=True,  # model predicts eps and the variance value v
            timestep_respacing=None,  # training respacing; None = every step
        )
    )


def base_config() -> ml_collections.ConfigDict:
    """Returns the shared defaults; experiment files override a few keys."""
    config = ml_collections.ConfigDict()
    config.model = model_defaults()
    config.text = text_defaults()
    config.clip = clip_defaults()
    config.diffusion = diffusion_defaults()
    return config


def _fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"config.{key} = {value!r}: {why}")


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


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks the sections this module defines; raises ConfigError naming the key.

    Returns the config unchanged so calls can be chained.
    """
    _check_choice(config, "model.kind", MODEL_KINDS)
    for key in ("model.image_size", "model.model_channels", "model.num_res_blocks"):
        _check_positive_int(config, key)
    _check_int_tuple(config, "model.channel_mult")
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
    _check_choice(config, "diffusion.noise_schedule", NOISE_SCHEDULES)
    return config


def _parse_ints(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in str(text).split(",") if part.strip())


def config_from_glide_options(options: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Turns a glide-text2im `create_model_and_diffusion` options dict into a config.

    Args:
      options: the keyword set of glide-text2im's `model_and_diffusion_defaults()`
        (or `model_and_diffusion_defaults_upsampler()`), optionally with
        `inpaint` and `super_res` flags. Comma strings and -1 sentinels are
        turned into tuples and None.

    Returns:
      A validated config with the `model`, `text` and `diffusion` sections set.
    """
    config = base_config()
    inpaint = bool(options.get("inpaint", False))
    super_res = bool(options.get("super_res", False))
    kind = {(False, False): "base", (False, True): "upsample", (True, False): "inpaint",
            (True, True): "upsample_inpaint"}[(inpaint, super_res)]
    image_size = int(options["image_size"])
    channel_mult = options.get("channel_mult", "")
    if not channel_mult:  # glide-text2im picks by image size when empty
        defaults = {256: (1, 1, 2, 2, 4, 4), 128: (1, 1, 2, 3, 4), 64: (1, 2, 3, 4)}
        if image_size not in defaults:
            raise ConfigError(f"options['channel_mult'] is empty and image_size {image_size} has no default")
        channel_mult = defaults[image_size]
    elif isinstance(channel_mult, str):
        channel_mult = _parse_ints(channel_mult)
    attention = options.get("attention_resolutions", "")
    attention = _parse_ints(attention) if isinstance(attention, str) else tuple(attention)
    m = config.model
    m.kind = kind
    m.image_size = image_size
    m.model_channels = int(options["num_channels"])
    m.num_res_blocks = int(options["num_res_blocks"])
    m.channel_mult = tuple(int(c) for c in channel_mult)
    m.attention_resolutions = attention
    m.num_heads = int(options.get("num_heads", 1))
    head_ch = int(options.get("num_head_channels", -1))
    m.num_head_channels = None if head_ch == -1 else head_ch
    heads_up = int(options.get("num_heads_upsample", -1))
    m.num_heads_upsample = None if heads_up == -1 else heads_up
    m.dropout = float(options.get("dropout", 0.0))
    m.use_scale_shift_norm = bool(options.get("use_scale_shift_norm", True))
    m.resblock_updown = bool(options.get("resblock_updown", True))
    t = config.text
    t.text_ctx = int(options["text_ctx"])
    t.xf_width = int(options["xf_width"])
    t.xf_layers = int(options["xf_layers"])
    t.xf_heads = int(options["xf_heads"])
    t.xf_final_ln = bool(options["xf_final_ln"])
    t.xf_padding = bool(options["xf_padding"])
    d = config.diffusion
    d.steps = int(options.get("diffusion_steps", 1000))
    d.noise_schedule = options.get("noise_schedule", "squaredcos_cap_v2")
    d.timestep_respacing = options.get("timestep_respacing") or None
    return validate(config)
