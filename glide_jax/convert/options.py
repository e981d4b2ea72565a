"""The config a checkpoint is converted with: a released preset, or the user's options JSON.

glide-text2im describes a U-Net by the keyword set of
`model_and_diffusion_defaults()` and a noised CLIP by its `clip/config.yaml`.
Both are checked here before `config.config_from_glide_options` /
`config.clip_config_from_glide` read them: an unknown key (a typo such as
"num_head_channel") or a value of the wrong JSON type would otherwise give a
model whose shapes may still fit the checkpoint but whose heads or schedule
are wrong, so each is one `ConversionError` naming the key.
"""

from __future__ import annotations

import difflib
import json
import pathlib
from typing import Any, Callable, Mapping

import ml_collections

from glide_jax import config as config_lib
from glide_jax.convert import core

# --kind -> (config.model.kind, preset file in configs/)
KINDS = {
    "base": ("base", "glide_base.py"),
    "upsample": ("upsample", "glide_upsample.py"),
    "base-inpaint": ("inpaint", "glide_base_inpaint.py"),
    "upsample-inpaint": ("upsample_inpaint", "glide_upsample_inpaint.py"),
    "clip-image": ("clip", "glide_clip.py"),
    "clip-text": ("clip", "glide_clip.py"),
}
_FLAGS = {"base": (False, False), "upsample": (False, True), "inpaint": (True, False),
          "upsample_inpaint": (True, True)}  # model kind -> (inpaint, super_res)
CONFIGS_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int_list(value: Any) -> bool:
    """A comma string of integers ("1,1,2", "" for the default) or a JSON list of them."""
    if isinstance(value, str):
        return all(part.strip().lstrip("-").isdigit() for part in value.split(",") if part.strip())
    return isinstance(value, list) and all(_is_int(item) for item in value)


# Each check: (predicate, what a valid value is).
_INT = (_is_int, "an integer")
_NUMBER = (_is_number, "a number")
_BOOL = (lambda value: isinstance(value, bool), "true or false")
_STR = (lambda value: isinstance(value, str), "a string")
_INTS = (_is_int_list, 'a comma string of integers such as "1,2,4", or a list of integers')

# glide-text2im's model_and_diffusion_defaults() (the upsampler's has the same keys).
GLIDE_OPTIONS = {
    "image_size": _INT, "num_channels": _INT, "num_res_blocks": _INT, "channel_mult": _INTS,
    "num_heads": _INT, "num_head_channels": _INT, "num_heads_upsample": _INT,
    "attention_resolutions": _INTS, "dropout": _NUMBER, "text_ctx": _INT, "xf_width": _INT,
    "xf_layers": _INT, "xf_heads": _INT, "xf_final_ln": _BOOL, "xf_padding": _BOOL,
    "diffusion_steps": _INT, "noise_schedule": _STR, "timestep_respacing": _STR,
    "use_scale_shift_norm": _BOOL, "resblock_updown": _BOOL, "use_fp16": _BOOL,
    "cache_text_emb": _BOOL, "inpaint": _BOOL, "super_res": _BOOL,
}
VOCAB_KEY = "tokenizer_n_vocab"  # beside the options (or among bare ones): the token embedding rows


def _clip_yaml_keys() -> dict[str, tuple[Callable[[Any], bool], str]]:
    """glide-text2im's clip/config.yaml: the `clip` section's keys plus the diffusion schedule."""
    keys = {key: _INT for key in config_lib.clip_defaults()}
    keys["logit_scale"] = _NUMBER
    keys["beta_schedule"] = _STR
    return keys


def check_keys(options: Mapping[str, Any], known: Mapping[str, tuple], what: str) -> None:
    """Refuses keys not in `known` (with a did-you-mean) and values of the wrong type.

    Args:
      options: the parsed JSON object.
      known: {key: (predicate, description of a valid value)}.
      what: how the error names the object, e.g. "options options.json".

    Raises:
      core.ConversionError: naming every unknown key, or the first mistyped one.
    """
    unknown = [key for key in options if key not in known]
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise core.ConversionError(f"{what} has key(s) glide-text2im does not know: {', '.join(hints)}")
    for key, value in options.items():
        check, valid = known[key]
        if not check(value):
            raise core.ConversionError(f"{what}: {key!r} must be {valid}, got {json.dumps(value)}")


def preset_config(kind: str) -> ml_collections.ConfigDict:
    """The released-size config of a --kind, from configs/."""
    path = CONFIGS_DIR / KINDS[kind][1]
    if not path.is_file():
        raise core.ConversionError(f"preset {path} not found (it ships with the repository); pass --options")
    return config_lib.load_config_file(str(path))


def _unet_config(raw: dict, model_kind: str, what: str) -> ml_collections.ConfigDict:
    wrapped = "model_and_diffusion_options" in raw
    options = raw["model_and_diffusion_options"] if wrapped else raw
    if not isinstance(options, dict):
        raise core.ConversionError(f"{what}: 'model_and_diffusion_options' must be a JSON object")
    options = dict(options)
    n_vocab = raw.get(VOCAB_KEY) if wrapped else options.pop(VOCAB_KEY, None)
    check_keys(options, GLIDE_OPTIONS, what)
    check_keys({} if n_vocab is None else {VOCAB_KEY: n_vocab}, {VOCAB_KEY: _INT}, what)
    inpaint, super_res = _FLAGS[model_kind]
    for flag, wanted in (("inpaint", inpaint), ("super_res", super_res)):
        if flag in options and options[flag] != wanted:
            raise core.ConversionError(
                f"options say {flag}={options[flag]}, which does not fit model kind {model_kind!r}")
        options[flag] = wanted
    config = config_lib.config_from_glide_options(options)
    if n_vocab is not None:
        config.text.n_vocab = n_vocab
    return config_lib.validate(config)


def _clip_config(raw: dict, what: str) -> ml_collections.ConfigDict:
    yaml = raw.get("config", raw)
    if not isinstance(yaml, dict):
        raise core.ConversionError(f"{what}: 'config' must be a JSON object")
    check_keys(yaml, _clip_yaml_keys(), what)
    return config_lib.clip_config_from_glide(yaml)


def options_config(path: str | pathlib.Path, kind: str) -> ml_collections.ConfigDict:
    """A config from a glide-text2im options JSON.

    Args:
      path: JSON holding glide-text2im's `create_model_and_diffusion` options,
        bare or under "model_and_diffusion_options" (a "tokenizer_n_vocab"
        beside them, or among bare ones, sets `text.n_vocab`; other keys beside
        them are ignored), or for the CLIP kinds its CLIP yaml, bare or under
        "config".
      kind: the --kind, one of `KINDS`.

    Raises:
      core.ConversionError: unreadable JSON, an unknown key or a mistyped value.
      config_lib.ConfigError: a value the config refuses (named by its key).
    """
    try:
        raw = json.loads(pathlib.Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise core.ConversionError(f"cannot read options {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise core.ConversionError(f"options {path} must hold a JSON object")
    what = f"options {path}"
    if KINDS[kind][0] == "clip":
        return _clip_config(raw, what)
    return _unet_config(raw, KINDS[kind][0], what)
