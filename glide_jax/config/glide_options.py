"""glide-text2im's option dicts -> configs (for the converter and the parity tools)."""

from __future__ import annotations

from typing import Any, Mapping

import ml_collections

from glide_jax.config.checks import CLIP_INT_KEYS, validate, validate_clip
from glide_jax.config.defaults import ConfigError, base_config


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
    required = ("image_size", "num_channels", "num_res_blocks", "text_ctx", "xf_width", "xf_layers",
                "xf_heads", "xf_final_ln", "xf_padding")
    missing = [key for key in required if key not in options]
    if missing:
        raise ConfigError(f"glide-text2im options are missing key(s) {missing}")
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



def clip_config_from_glide(clip_yaml: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """Turns a glide-text2im CLIP config (its `clip/config.yaml`) into a config.

    Args:
      clip_yaml: the parsed yaml dict, with the keys of
        `glide_text2im/clip/config.yaml` (image_size, patch_size, n_vocab, ...,
        logit_scale, beta_schedule, n_timesteps).

    Returns:
      A config with model.kind = "clip", the `clip` section filled in,
      model.image_size = clip.image_size and the diffusion schedule of the yaml.
    """
    config = base_config()
    missing = [key for key in CLIP_INT_KEYS + ("logit_scale",) if key not in clip_yaml]
    if missing:
        raise ConfigError(f"CLIP config is missing key(s) {missing}")
    for key in CLIP_INT_KEYS:
        config.clip[key] = int(clip_yaml[key])
    config.clip.logit_scale = float(clip_yaml["logit_scale"])
    config.model.kind = "clip"
    config.model.image_size = config.clip.image_size
    config.diffusion.steps = config.clip.n_timesteps
    config.diffusion.noise_schedule = clip_yaml.get("beta_schedule", "squaredcos_cap_v2")
    validate_clip(config)
    return validate(config)

