"""The command line of `sample.py`: flags -> pipeline -> PNGs, grid and settings.

Usage:
  python sample.py --base CKPT [--upsample CKPT] [--clip CKPT]
      (--prompt TEXT [TEXT ...] | --prompts-file FILE) --out DIR
      [--image PNG --mask PNG] [--steps 100] [--sampler ddpm|ddim]
      [--guidance-scale 3.0] [--upsample-steps fast27] [--upsample-sampler ddim]
      [--upsample-temp 0.997] [--clip-guidance-scale 3.0] [--batch-size 8] [--seed 0]
      [--dtype float32|bfloat16|float16] [--grid-cols N] [--no-progress]

Every sampler flag overrides one key of `config.sample`
(`glide_jax.config.sample_defaults`), whose defaults are glide-text2im's
notebook settings. The output directory receives one PNG per prompt
(`0000.png`, ...), `grid.png` and `settings.json` with every setting needed to
reproduce the run. Bad input (a missing or wrong checkpoint, image or mask)
is reported on one line and the exit status is 2.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import warnings
from typing import Callable, Sequence

import ml_collections

from glide_jax import config as config_lib
from glide_jax.sampling import images as images_lib
from glide_jax.sampling.errors import SamplingError

# flag -> key of config.sample, with its type and help text.
_SAMPLE_FLAGS = (
    ("--steps", "steps", str, 'base respacing: "N", "a,b,c", "ddimN" or "fast27"'),
    ("--sampler", "sampler", str, "base sampler: ddpm or ddim"),
    ("--guidance-scale", "guidance_scale", float, "classifier-free guidance scale (1.0 = the conditional model)"),
    ("--clip-guidance-scale", "clip_guidance_scale", float, "CLIP guidance scale (with --clip)"),
    ("--upsample-steps", "upsample_steps", str, "upsampler respacing"),
    ("--upsample-sampler", "upsample_sampler", str, "upsampler sampler: ddpm or ddim"),
    ("--upsample-temp", "upsample_temp", float, "scale of the upsampler's initial noise"),
    ("--batch-size", "batch_size", int, "prompts per batch"),
    ("--seed", "seed", int, "PRNG seed"),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of sample.py; sampler flags default to config.sample."""
    defaults = config_lib.sample_defaults()
    parser = argparse.ArgumentParser(
        prog="sample.py", description="Sample images from GLIDE checkpoints (glide_jax.checkpoints format).")
    parser.add_argument("--base", required=True, help="base (or inpainting) model checkpoint directory")
    parser.add_argument("--upsample", help="upsampler checkpoint directory (64 -> 256 in GLIDE)")
    parser.add_argument("--clip", help="noised CLIP checkpoint: CLIP guidance instead of classifier-free")
    prompts = parser.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", nargs="+", action="extend", metavar="TEXT", help="prompt(s)")
    prompts.add_argument("--prompts-file", type=pathlib.Path, help="text file, one prompt per line")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument("--image", type=pathlib.Path, help="inpainting: source image")
    parser.add_argument("--mask", type=pathlib.Path,
                        help="inpainting: mask PNG of the image's size, white = keep, black = generate")
    for flag, key, kind, text in _SAMPLE_FLAGS:
        parser.add_argument(flag, dest=key, type=kind, default=None,
                            help=f"{text} (default {defaults[key]!r})")
    parser.add_argument("--dtype", choices=config_lib.DTYPES, default=None,
                        help="compute dtype (default: each checkpoint's model.dtype); params stay float32")
    parser.add_argument("--grid-cols", type=int, default=None, help="images per grid row (default: square)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def sample_config_from_args(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """config.sample with the given flags applied; ConfigError names a bad key."""
    config = ml_collections.ConfigDict({"sample": config_lib.sample_defaults()})
    for _, key, _, _ in _SAMPLE_FLAGS:
        value = getattr(args, key)
        if value is not None:
            config.sample[key] = value
    config_lib.validate_sample(config)
    return config.sample


def read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from --prompt or --prompts-file (one per non-empty line)."""
    if args.prompt:
        return list(args.prompt)
    path = args.prompts_file
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SamplingError(f"cannot read --prompts-file {path}: {exc}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise SamplingError(f"--prompts-file {path} holds no prompt")
    return prompts


def prepare_out_dir(out_dir: pathlib.Path) -> None:
    """Creates --out before any sampling, so that a bad path fails at once."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SamplingError(f"--out {out_dir}: cannot create the output directory ({exc})") from None


def _numbered_pngs(out_dir: pathlib.Path) -> list[pathlib.Path]:
    return [p for p in out_dir.glob("*.png") if p.stem.isdigit()]


def write_outputs(out_dir: pathlib.Path, images, settings: dict, grid_cols: int | None = None) -> list[pathlib.Path]:
    """Writes one PNG per image, grid.png and settings.json; returns the PNG paths.

    Numbered PNGs an earlier run left in `out_dir` beyond this run's count
    are removed, so the folder holds one run's images and their settings.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, image in enumerate(images):
        path = out_dir / f"{index:04d}.png"
        images_lib.save_png(path, image)
        paths.append(path)
    for stale in sorted(set(_numbered_pngs(out_dir)) - set(paths)):
        stale.unlink()
    images_lib.save_png(out_dir / "grid.png", images_lib.make_grid(images, ncols=grid_cols))
    record = dict(settings, files=[p.name for p in paths], grid="grid.png")
    (out_dir / "settings.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return paths


def _absolute(path) -> str | None:
    return None if path is None else str(pathlib.Path(path).resolve())


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> list[pathlib.Path]:
    """Loads the pipeline, samples every prompt and writes the outputs."""
    from glide_jax.sampling import pipeline as pipeline_lib  # jax is imported only once flags parse

    sample_config = sample_config_from_args(args)
    prompts = read_prompts(args)
    if (args.image is None) != (args.mask is None):
        raise SamplingError("--image and --mask must be given together")
    if args.grid_cols is not None and args.grid_cols < 1:
        raise SamplingError(f"--grid-cols {args.grid_cols}: must be at least 1")
    prepare_out_dir(args.out)
    pipe = pipeline_lib.load_pipeline(args.base, upsample=args.upsample, clip=args.clip, dtype=args.dtype)
    inpaint = None
    if args.image is not None:
        inpaint = pipe.load_inpaint_inputs(args.image, args.mask)
    images = pipe.generate(prompts, sample_config, inpaint=inpaint, progress=not args.no_progress)
    settings = dict(
        mode=pipe.mode(inpaint),
        prompts=prompts,
        checkpoints={model.role: _absolute(model.path) for model in (pipe.base, pipe.upsampler, pipe.clip)
                     if model is not None},
        image=_absolute(args.image), mask=_absolute(args.mask),
        mask_convention="white = keep, black = generate",
        sample=sample_config.to_dict(),
        dtype=pipe.base.config.model.dtype,
        num_devices=pipe.num_devices,
        image_size=int(images.shape[1]),
    )
    paths = write_outputs(args.out, images, settings, args.grid_cols)
    echo(f"wrote {len(paths)} images, grid.png and settings.json to {args.out}")
    return paths


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    del filename, lineno, line
    print(f"warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0, or 2 for bad input)."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            run(args)
        except (SamplingError, config_lib.ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    return 0
