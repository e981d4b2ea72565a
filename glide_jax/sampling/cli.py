"""The command line of `sample.py`: flags -> pipeline -> PNGs, grid and settings.

Usage:
  python sample.py --base CKPT [--upsample CKPT [CKPT ...]] [--clip CKPT]
      (--prompt TEXT [TEXT ...] | --prompts-file FILE) [--num-samples 1] --out DIR
      [--image PNG --mask PNG] [--steps 100] [--sampler ddpm|ddim]
      [--guidance-scale 3.0] [--upsample-steps fast27] [--upsample-sampler ddim]
      [--upsample-temp 0.997] [--clip-guidance-scale 3.0] [--batch-size 8] [--seed 0]
      [--dtype float32|bfloat16|float16] [--grid-cols N] [--no-progress]

Every sampler flag overrides one key of `config.sample`
(`glide_jax.config.sample_defaults`), whose defaults are glide-text2im's
notebook settings (an inpainting model gets the inpaint notebook's guidance
5 and DDPM upsampler). The output directory receives `--num-samples` PNGs
per prompt (`0000.png`, ..., each prompt's samples together), written as
each batch finishes, then `grid.png` and `settings.json` with every setting
needed to reproduce the run. Bad input (a
missing or wrong checkpoint, image or mask) is reported on one line and the
exit status is 2. Ctrl-C (SIGINT) or SIGTERM keeps the finished batches
(with a grid and `settings.json` marked `"interrupted": true`) and exits 130
or 143; an error after the first batch keeps them the same way, with the
error in `settings.json`. The warnings a run printed (a prompt cut to the
text context, a stretched source image) are listed there too. A folder that
holds images this tool did not write (no `settings.json` of an earlier run
listing them) is refused rather than overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import signal
import sys
import threading
import warnings
from typing import Callable, Sequence

import ml_collections
import numpy as np
from tqdm import tqdm

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
    ("--batch-size", "batch_size", int, "images per batch"),
    ("--seed", "seed", int, "PRNG seed"),
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of sample.py; sampler flags default to config.sample."""
    defaults = config_lib.sample_defaults()
    parser = argparse.ArgumentParser(
        prog="sample.py", description="Sample images from GLIDE checkpoints (glide_jax.checkpoints format).")
    parser.add_argument("--base", required=True, help="base (or inpainting) model checkpoint directory")
    parser.add_argument("--upsample", nargs="+", action="extend", metavar="CKPT",
                        help="upsampler checkpoint directory (64 -> 256 in GLIDE); several are chained, each "
                             "upsampling the one before (64 -> 256 -> 1024), in the order given")
    parser.add_argument("--clip", help="noised CLIP checkpoint: CLIP guidance instead of classifier-free")
    prompts = parser.add_mutually_exclusive_group(required=True)
    prompts.add_argument("--prompt", nargs="+", action="extend", metavar="TEXT", help="prompt(s)")
    prompts.add_argument("--prompts-file", type=pathlib.Path,
                         help="UTF-8 text file, one prompt per non-empty line (no comment syntax)")
    parser.add_argument("--num-samples", type=int, default=1, metavar="N",
                        help="images per prompt (default 1); the grid then has one row per prompt")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory")
    parser.add_argument("--image", type=pathlib.Path, help="inpainting: source image")
    parser.add_argument("--mask", type=pathlib.Path,
                        help="inpainting: mask PNG of the image's size, white = keep, black = generate")
    for flag, key, kind, text in _SAMPLE_FLAGS:
        default = f"default {defaults[key]!r}"
        if key in config_lib.INPAINT_SAMPLE_DEFAULTS:
            default += f"; {config_lib.INPAINT_SAMPLE_DEFAULTS[key]!r} with an inpainting model"
        parser.add_argument(flag, dest=key, type=kind, default=None, help=f"{text} ({default})")
    parser.add_argument("--dtype", choices=config_lib.DTYPES, default=None,
                        help="compute dtype (default: each checkpoint's model.dtype); params stay float32")
    parser.add_argument("--grid-cols", type=int, default=None,
                        help="images per grid row (default: --num-samples if above 1, else square)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return parser


def sample_overrides(args: argparse.Namespace) -> dict:
    """The config.sample keys the flags set (the pipeline fills in the rest)."""
    return {key: getattr(args, key) for _, key, _, _ in _SAMPLE_FLAGS if getattr(args, key) is not None}


def sample_config_from_args(args: argparse.Namespace) -> ml_collections.ConfigDict:
    """config.sample with the given flags applied; a bad value is a SamplingError naming its flag."""
    config = ml_collections.ConfigDict({"sample": config_lib.sample_defaults()})
    config.sample.update(sample_overrides(args))
    try:
        config_lib.validate_sample(config)
    except config_lib.ConfigError as exc:
        flags = {f"sample.{key}": flag for flag, key, _, _ in _SAMPLE_FLAGS}
        if exc.key in flags:
            raise SamplingError(f"{flags[exc.key]} {exc.detail}") from None
        raise
    return config.sample


def read_prompts(args: argparse.Namespace) -> list[str]:
    """Prompts from --prompt or --prompts-file (one per non-empty line)."""
    if args.prompt:
        return list(args.prompt)
    path = args.prompts_file
    try:
        # Lines end at "\n" (or "\r\n") only: str.splitlines would also cut at U+2028, U+0085 or a form feed.
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise SamplingError(f"cannot read --prompts-file {path}: {exc}") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise SamplingError(f"--prompts-file {path} holds no prompt")
    return prompts


OUTPUT_NAMES = ("grid.png", "settings.json")


def _earlier_outputs(out_dir: pathlib.Path) -> set[pathlib.Path] | None:
    """The files an earlier run listed in out_dir/settings.json; None if there is no such record."""
    try:
        record = json.loads((out_dir / "settings.json").read_text(encoding="utf-8"))
        return {out_dir / name for name in [*record["files"], record.get("grid", "grid.png")] if "/" not in name}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare_out_dir(out_dir: pathlib.Path) -> tuple[bool, set[pathlib.Path]]:
    """Creates --out before any sampling, so that a bad path fails at once.

    Returns:
      (created, earlier): whether this call made the directory, and the files
      of an earlier run there (removed once this run's are written).

    Raises:
      SamplingError: the directory cannot be made, or holds numbered PNGs, a
        grid.png or a settings.json that no earlier run of this tool wrote
        (they would be overwritten or deleted).
    """
    created = not out_dir.exists()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SamplingError(f"--out {out_dir}: cannot create the output directory ({exc})") from None
    earlier = _earlier_outputs(out_dir)
    ours = earlier or set()
    clashing = sorted(p.name for p in out_dir.iterdir()
                      if (p.name in OUTPUT_NAMES or (p.suffix == ".png" and p.stem.isdigit()))
                      and p not in ours and not (earlier is not None and p.name == "settings.json"))
    if clashing:
        raise SamplingError(f"--out {out_dir} holds {', '.join(clashing[:3])}{' ...' if len(clashing) > 3 else ''}, "
                            "which sample.py did not write there; choose an empty or new folder")
    return created, ours


@dataclasses.dataclass
class _Outputs:
    """The run's files in --out: PNGs as batches finish, then the grid and settings.json.

    Attributes:
      out: the output directory.
      grid_cols: images per grid row (None: square).
      earlier: files of an earlier run there (`prepare_out_dir`); those this
        run does not rewrite are removed once its settings.json is written,
        so the folder holds one run's images and their settings.
      images: uint8 (S, S, 3) images, in prompt order.
      paths: their PNG files.
      warnings: the messages of the warnings the run printed.
    """

    out: pathlib.Path
    grid_cols: int | None
    earlier: set[pathlib.Path] = dataclasses.field(default_factory=set)
    images: list = dataclasses.field(default_factory=list)
    paths: list[pathlib.Path] = dataclasses.field(default_factory=list)
    warnings: list[str] = dataclasses.field(default_factory=list)

    def add(self, image) -> None:
        """Writes the next image's PNG."""
        self.paths.append(self.out / f"{len(self.paths):04d}.png")
        images_lib.save_png(self.paths[-1], image)
        self.images.append(image)

    def finish(self, settings: dict) -> list[pathlib.Path]:
        """Writes grid.png and settings.json (`settings` plus the files, grid and warnings); returns the PNGs."""
        ncols = (math.ceil(math.sqrt(len(self.images))) if self.grid_cols is None
                 else min(self.grid_cols, len(self.images)))
        images_lib.save_png(self.out / "grid.png", images_lib.make_grid(np.stack(self.images), ncols=ncols))
        for stale in sorted(set(self.earlier) - set(self.paths) - {self.out / "grid.png"}):
            stale.unlink(missing_ok=True)
        record = dict(settings, image_size=int(self.images[0].shape[0]), files=[p.name for p in self.paths],
                      grid="grid.png", grid_cols=ncols, warnings=self.warnings)
        (self.out / "settings.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        return self.paths


def _absolute(path) -> str | None:
    return None if path is None else str(pathlib.Path(path).resolve())


def _unused_flags(args: argparse.Namespace) -> list[str]:
    """Sampler flags given for a stage or guidance this run does not have."""
    unused = []
    if args.clip is not None and args.guidance_scale is not None:
        unused.append("--guidance-scale (with --clip the base model is guided by CLIP, not classifier-free)")
    if args.clip is None and args.clip_guidance_scale is not None:
        unused.append("--clip-guidance-scale (no --clip)")
    if args.upsample is None:
        unused += [f"{flag} (no --upsample)" for flag, key in (("--upsample-steps", "upsample_steps"),
                                                               ("--upsample-sampler", "upsample_sampler"),
                                                               ("--upsample-temp", "upsample_temp"))
                   if getattr(args, key) is not None]
    return unused


def _run_record(args, pipe, prompts, sample_config, inpaint) -> dict:
    """settings.json: what ran, on what, with which settings and software."""
    import jax  # pylint: disable=import-outside-toplevel

    from glide_jax import __version__, checkpoints  # pylint: disable=import-outside-toplevel

    sample = sample_config.to_dict()
    if pipe.clip is not None:
        sample["guidance_scale"] = None
    else:
        sample["clip_guidance_scale"] = None
    if not pipe.upsamplers:
        sample.update(upsample_steps=None, upsample_sampler=None, upsample_temp=None)
    models = [model for model in (pipe.base, *pipe.upsamplers, pipe.clip) if model is not None]
    return dict(
        mode=pipe.mode(inpaint),
        guidance="clip" if pipe.clip is not None else "classifier-free",
        prompts=prompts,  # one per image file
        num_samples=args.num_samples,
        checkpoints={model.name: _absolute(model.path) for model in models},
        checkpoint_files={model.name: _file_identity(model.path) for model in models},
        # Training exports name their run, step and EMA rate (None: another source).
        checkpoint_origins={model.name: checkpoints.load_origin(model.path) for model in models},
        image=_absolute(args.image), mask=_absolute(args.mask),
        mask_convention="white = keep, black = generate",
        sample=sample,
        dtype=pipe.base.config.model.dtype,
        dtypes={model.name: model.config.model.dtype for model in models},
        num_devices=pipe.num_devices,
        backend=jax.default_backend(),
        versions={"glide_jax": __version__, "jax": jax.__version__},
    )


def _grid_cols(args: argparse.Namespace) -> int | None:
    """--grid-cols; with several samples per prompt, one row per prompt; else square (None)."""
    if args.grid_cols is None and args.num_samples > 1:
        return args.num_samples
    return args.grid_cols


def _file_identity(checkpoint_dir) -> dict | None:
    """Size and modification time of a checkpoint's params.npz (training rewrites workdir/export)."""
    path = pathlib.Path(checkpoint_dir) / "params.npz"
    try:
        stat = path.stat()
    except OSError:
        return None
    return {"params_bytes": stat.st_size, "params_mtime": stat.st_mtime}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is, as Ctrl-C raises KeyboardInterrupt."""


def _terminate(signum, frame):
    del signum, frame
    raise Terminated()


def _recording(shown: list[str]):
    """A warnings.showwarning that also appends each message to `shown` (for settings.json)."""
    show = warnings.showwarning

    def record_and_show(message, *args, **kwargs):
        shown.append(str(message))
        show(message, *args, **kwargs)
    return record_and_show


def run(args: argparse.Namespace, echo: Callable[[str], None] = print) -> list[pathlib.Path]:
    """Loads the pipeline, samples every prompt and writes the outputs as batches finish.

    If sampling stops after some batches (Ctrl-C, SIGTERM or an error), the
    finished images are kept with a grid and a settings.json that says so,
    and the exception is raised again.
    """
    from glide_jax.sampling import pipeline as pipeline_lib  # jax is imported only once flags parse

    sample_config_from_args(args)  # bad flag values fail before any model loads
    if args.num_samples < 1:
        raise SamplingError(f"--num-samples {args.num_samples}: must be at least 1")
    prompts = [prompt for prompt in read_prompts(args) for _ in range(args.num_samples)]
    if (args.image is None) != (args.mask is None):
        raise SamplingError("--image and --mask must be given together")
    if args.grid_cols is not None and args.grid_cols < 1:
        raise SamplingError(f"--grid-cols {args.grid_cols}: must be at least 1")
    created, earlier = prepare_out_dir(args.out)
    outputs = _Outputs(args.out, _grid_cols(args), earlier)
    with warnings.catch_warnings():
        warnings.showwarning = _recording(outputs.warnings)
        for flag in _unused_flags(args):
            warnings.warn(f"{flag} has no effect and is not recorded", stacklevel=2)
        try:
            pipe = pipeline_lib.load_pipeline(args.base, upsample=args.upsample, clip=args.clip, dtype=args.dtype)
            sample_config = pipe.settings(sample_overrides(args))
            inpaint = None
            if args.image is not None:
                inpaint = pipe.load_inpaint_inputs(args.image, args.mask)
            record = _run_record(args, pipe, prompts, sample_config, inpaint)
            for _, batch in pipe.iter_batches(prompts, sample_config, inpaint=inpaint,
                                              progress=not args.no_progress):
                for image in batch:
                    outputs.add(image)
        except BaseException as exc:
            if outputs.images:
                _keep_finished(outputs, record, prompts, exc, echo)
            elif created and args.out.is_dir() and not any(args.out.iterdir()):
                args.out.rmdir()  # nothing of a failed or interrupted run is left behind
            raise
    paths = outputs.finish(record)
    echo(f"wrote {len(paths)} image{'s' if len(paths) > 1 else ''}, grid.png and settings.json to {args.out}")
    return paths


def _keep_finished(outputs: _Outputs, record: dict, prompts: list[str], exc: BaseException,
                   echo: Callable[[str], None]) -> None:
    """Writes the grid and settings.json of the images finished before `exc` stopped the run."""
    done = len(outputs.images)
    interrupted = isinstance(exc, KeyboardInterrupt)
    record = dict(record, interrupted=True, prompts=prompts[:done], prompts_not_sampled=prompts[done:])
    if not interrupted:
        record["error"] = f"{type(exc).__name__}: {exc}"
    outputs.finish(record)
    why = "interrupted" if interrupted else f"stopped by {type(exc).__name__}"
    echo(f"{why}: kept the {done} finished images of {len(prompts)} in {outputs.out}")


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    del filename, lineno, line
    tqdm.write(f"warning: {message}", file=file or sys.stderr)  # above the progress bar, not into it


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0; 2 for bad input; 130 after Ctrl-C, 143 after SIGTERM)."""
    args = build_parser().parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            run(args)
        except (SamplingError, config_lib.ConfigError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt as exc:
            terminated = isinstance(exc, Terminated)
            print("terminated" if terminated else "interrupted", file=sys.stderr)
            return 128 + (signal.SIGTERM if terminated else signal.SIGINT)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    return 0
