"""Converts a released glide-text2im checkpoint into an exported glide-jax model.

Usage:
  python -m glide_jax.convert INPUT --kind KIND [--options JSON] --output DIR [--force]

INPUT is a `.pt` state dict (read with `torch.load(weights_only=True)`) or an
`.npz` of the same keys. KIND is one of base, upsample, base-inpaint,
upsample-inpaint, clip-image, clip-text. Without `--options` the released
size of that kind is used (configs/glide_*.py); with it, JSON holding
glide-text2im's `create_model_and_diffusion` options (either bare or under
"model_and_diffusion_options", where a "tokenizer_n_vocab" beside it sets the
vocabulary size) or, for the CLIP kinds, its CLIP yaml (bare or under "config").

The two CLIP encoders are released as separate files: convert both into the
same DIR and the second run completes the `NoisedCLIP` parameters. A DIR that
already holds another checkpoint (another kind, or a CLIP of another config)
is refused unless `--force` replaces it. Errors are one `error:` line on
stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Callable

import ml_collections
import numpy as np

from glide_jax import checkpoints
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


def preset_config(kind: str) -> ml_collections.ConfigDict:
    """The released-size config of a --kind, from configs/."""
    path = CONFIGS_DIR / KINDS[kind][1]
    if not path.is_file():
        raise core.ConversionError(f"preset {path} not found (it ships with the repository); pass --options")
    return config_lib.load_config_file(str(path))


def _unet_config(raw: dict, model_kind: str) -> ml_collections.ConfigDict:
    options = dict(raw.get("model_and_diffusion_options", raw))
    inpaint, super_res = _FLAGS[model_kind]
    for flag, wanted in (("inpaint", inpaint), ("super_res", super_res)):
        if flag in options and bool(options[flag]) != wanted:
            raise core.ConversionError(
                f"options say {flag}={options[flag]}, which does not fit model kind {model_kind!r}")
        options[flag] = wanted
    config = config_lib.config_from_glide_options(options)
    if "tokenizer_n_vocab" in raw:
        config.text.n_vocab = int(raw["tokenizer_n_vocab"])
    return config_lib.validate(config)


def options_config(path: pathlib.Path, kind: str) -> ml_collections.ConfigDict:
    """A config from a glide-text2im options JSON (see the module docstring)."""
    try:
        raw = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise core.ConversionError(f"cannot read options {path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise core.ConversionError(f"options {path} must hold a JSON object")
    model_kind = KINDS[kind][0]
    if model_kind == "clip":
        return config_lib.clip_config_from_glide(raw.get("config", raw))
    return _unet_config(raw, model_kind)


def _clip_params(kind: str, state: dict, config, output: pathlib.Path) -> dict:
    """One CLIP encoder's params, merged with the other one already in `output`."""
    from glide_jax.convert import clip as clip_convert  # only the CLIP kinds need it

    if kind == "clip-image":
        params = {"image_encoder": clip_convert.convert_clip_image(state, config)}
    else:
        params = {"text_encoder": clip_convert.convert_clip_text(state, config)}
    if (output / checkpoints.PARAMS_FILE).is_file():  # the other encoder, checked by `_check_output`
        _, old_params = checkpoints.load_model(output)
        params = {**old_params, **params}
    if {"image_encoder", "text_encoder"} <= set(params):  # both encoders: add the logit scale
        return clip_convert.assemble_clip_params(params["image_encoder"], params["text_encoder"], config)["params"]
    return params


def _check_output(output: pathlib.Path, kind: str, config, force: bool) -> None:
    """Refuses to replace a checkpoint already in `output`, except a CLIP's other encoder.

    The two CLIP encoders come as two files and are converted into one
    checkpoint, so `--kind clip-text` into a folder holding a CLIP of the same
    config writes the text encoder beside the image encoder. Anything else
    already there (another model, a CLIP of another config) is only replaced
    with `force`.
    """
    if not (output / checkpoints.CONFIG_FILE).is_file() or force:
        return
    try:
        old_config = checkpoints.load_config(output)
        old_kind = old_config.model.kind
    except Exception:  # noqa: BLE001 - any unreadable checkpoint is "something else"
        old_kind, old_config = "unreadable", None
    if KINDS[kind][0] == "clip" and old_kind == "clip" and old_config.clip.to_dict() == config.clip.to_dict():
        return  # this encoder is (re)written beside the other one
    raise core.ConversionError(
        f"--output {output} already holds a {old_kind!r} checkpoint"
        + (" of another CLIP config" if old_kind == "clip" and KINDS[kind][0] == "clip" else "")
        + "; choose another --output, or pass --force to replace it")


def convert(input_path: str | pathlib.Path, kind: str, output: str | pathlib.Path,
            options: str | pathlib.Path | None = None, force: bool = False) -> tuple[ml_collections.ConfigDict, dict]:
    """Converts INPUT and writes the exported checkpoint to `output`.

    Args:
      force: replace whatever checkpoint `output` holds (see `_check_output`).

    Returns:
      (config, params) as written by `checkpoints.save_model`.
    """
    if kind not in KINDS:
        raise core.ConversionError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    output = pathlib.Path(output)
    config = options_config(pathlib.Path(options), kind) if options else preset_config(kind)
    _check_output(output, kind, config, force)
    if force and (output / checkpoints.PARAMS_FILE).is_file():
        (output / checkpoints.PARAMS_FILE).unlink()  # replaced, not merged
    state = core.load_state(input_path)
    if KINDS[kind][0] == "clip":
        params = _clip_params(kind, state, config, output)
    else:
        from glide_jax.convert.unet import convert_unet

        params = convert_unet(state, config)
    checkpoints.save_model(output, config, params)
    return config, params


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m glide_jax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="state dict: .pt (torch.load weights_only) or .npz")
    parser.add_argument("--kind", required=True, choices=sorted(KINDS))
    parser.add_argument("--options", default=None, help="glide-text2im options JSON (default: released size)")
    parser.add_argument("--output", required=True, help="directory for config.json + params.npz")
    parser.add_argument("--force", action="store_true",
                        help="replace a checkpoint already in --output (the other CLIP encoder is merged anyway)")
    args = parser.parse_args(argv)
    try:
        config, params = convert(args.input, args.kind, args.output, args.options, args.force)
    except (core.ConversionError, config_lib.ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    count = sum(int(np.size(leaf)) for leaf in _leaves(params))
    out(f"wrote {args.output}: model.kind={config.model.kind}, {count} parameters"
        + (" (both CLIP encoders)" if {"image_encoder", "text_encoder"} <= set(params) else ""))
    text = config.get("text")
    if (config.model.kind != "clip" and text is not None and text.tokenizer == "gpt2"
            and int(text.n_vocab) != config_lib.GPT2_VOCAB_SIZE):
        print(f"warning: the model has {text.n_vocab} token embeddings but the GPT-2 tokenizer gives ids up to "
              f"{config_lib.GPT2_VOCAB_SIZE}; sample.py will refuse it (a test-sized checkpoint?)", file=sys.stderr)
    return 0


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield tree


if __name__ == "__main__":
    sys.exit(main())
