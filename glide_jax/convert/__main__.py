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
same DIR and the second run completes the `NoisedCLIP` parameters. The same
network may be converted again into its own DIR; a DIR that already holds
another checkpoint (another kind or config) is refused unless `--force`
replaces it, and a training workdir is always refused (see `output`).
Everything is read, converted and checked before DIR is touched. Errors are
one `error:` line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Callable

import ml_collections
import numpy as np

from glide_jax import config as config_lib
from glide_jax.convert import core
from glide_jax.convert import output as output_lib
from glide_jax.convert.options import KINDS, options_config, preset_config

__all__ = ["KINDS", "convert", "main", "options_config", "preset_config"]
_CLIP_FILES = {"clip-image": "clip_image_enc.pt", "clip-text": "clip_text_enc.pt"}


def _clip_params(kind: str, state: dict, config, kept: dict) -> dict:
    """One CLIP encoder's params beside `kept` (the other one, if any), with the logit scale once both are there."""
    from glide_jax.convert import clip as clip_convert  # only the CLIP kinds need it

    if kind == "clip-image":
        params = {**kept, "image_encoder": clip_convert.convert_clip_image(state, config)}
    else:
        params = {**kept, "text_encoder": clip_convert.convert_clip_text(state, config)}
    if set(output_lib.ENCODERS.values()) <= set(params):
        return clip_convert.assemble_clip_params(params["image_encoder"], params["text_encoder"], config)["params"]
    return params


def _convert_state(input_path, kind: str, config, kept: dict, options) -> dict:
    state = core.load_state(input_path)
    try:
        if kind in output_lib.ENCODERS:
            return _clip_params(kind, state, config, kept)
        from glide_jax.convert.unet import convert_unet

        return convert_unet(state, config)
    except core.CheckpointMismatch as exc:
        if not exc.another_size:
            raise
        hint = (f"the options {options} do not match the checkpoint: check --kind and those options" if options
                else "a checkpoint of another size or kind: check --kind, and pass the model's glide-text2im "
                     "options with --options")
        raise core.CheckpointMismatch(f"{exc}\n  ({hint})", another_size=True) from exc


def convert(input_path: str | pathlib.Path, kind: str, output: str | pathlib.Path,
            options: str | pathlib.Path | None = None, force: bool = False) -> tuple[ml_collections.ConfigDict, dict]:
    """Converts INPUT and writes the exported checkpoint to `output`.

    The checkpoint is read, converted and checked first; `output` is written
    only then, all or nothing (`output_lib.write_model`).

    Args:
      input_path: the `.pt` or `.npz` state dict.
      kind: one of `KINDS`.
      output: the folder for config.json + params.npz.
      options: glide-text2im options JSON, or None for the released preset.
      force: replace another checkpoint in `output` (see `output_lib.check_output`).

    Returns:
      (config, params) as written by `checkpoints.save_model`.
    """
    if kind not in KINDS:
        raise core.ConversionError(f"--kind {kind!r} is not one of {', '.join(KINDS)}")
    output = pathlib.Path(output)
    config = options_config(options, kind) if options else preset_config(kind)
    kept = output_lib.check_output(output, kind, config, force)
    params = _convert_state(input_path, kind, config, kept, options)
    output_lib.write_model(output, config, params)
    return config, params


def _success_line(args: argparse.Namespace, config, params: dict) -> str:
    count = sum(int(np.size(leaf)) for leaf in _leaves(params))
    line = f"wrote {args.output}: model.kind={config.model.kind}, {count} parameters"
    if args.kind not in output_lib.ENCODERS:
        return line
    if set(output_lib.ENCODERS.values()) <= set(params):
        return line + " (both CLIP encoders)"
    other = next(kind for kind in output_lib.ENCODERS if kind != args.kind)
    options = f" --options {args.options}" if args.options else ""
    return (f"{line} (the CLIP {args.kind[5:]} encoder only: the {other[5:]} encoder is still missing; add it "
            f"with python -m glide_jax.convert {_CLIP_FILES[other]} --kind {other}{options} --output {args.output})")


def _vocab_warning(config) -> str | None:
    text = config.get("text")
    if (config.model.kind == "clip" or text is None or text.tokenizer != "gpt2"
            or int(text.n_vocab) == config_lib.GPT2_VOCAB_SIZE):
        return None
    return (f"warning: the model has {text.n_vocab} token embeddings but the GPT-2 tokenizer gives ids up to "
            f"{config_lib.GPT2_VOCAB_SIZE - 1}; sample.py will refuse it (a test-sized checkpoint?)")


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m glide_jax.convert", description=__doc__.splitlines()[0])
    parser.add_argument("input", help="state dict: .pt (torch.load weights_only) or .npz")
    parser.add_argument("--kind", required=True, choices=sorted(KINDS))
    parser.add_argument("--options", default=None, help="glide-text2im options JSON (default: released size)")
    parser.add_argument("--output", required=True, help="directory for config.json + params.npz")
    parser.add_argument("--force", action="store_true",
                        help="replace a checkpoint already in --output (the other CLIP encoder of the same "
                             "config is merged anyway; a training workdir is never replaced)")
    args = parser.parse_args(argv)
    try:
        config, params = convert(args.input, args.kind, args.output, args.options, args.force)
    except (core.ConversionError, config_lib.ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out(_success_line(args, config, params))
    warning = _vocab_warning(config)
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _leaves(tree):
    if isinstance(tree, dict):
        for value in tree.values():
            yield from _leaves(value)
    else:
        yield tree


if __name__ == "__main__":
    sys.exit(main())
