"""Trains a GLIDE model (base, upsampler, inpainting or noised CLIP).

    python train.py --config configs/shapes_base.py --workdir runs/shapes_base \
        [--config.train.num_steps=2000 --config.mesh.fsdp=8 --config.train.sample_every=None ...]

Everything lives in `glide_jax.train.loop.train_and_evaluate`; a workdir that
already holds a checkpoint resumes from it. Exit codes:
  0    the run reached train.num_steps;
  2    a bad config, config file, override, workdir or init_from (one `error:` line);
  1    the loss became non-finite (the last good checkpoint is named);
  130, 143  SIGINT (Ctrl-C) or SIGTERM: a checkpoint was saved and the same
       command resumes (128 + the signal number, as a shell reports it).
See docs/ARCHITECTURE.md, "Training".
"""

import argparse
import contextlib
import logging
import os
import pathlib
import sys
import threading

from glide_jax import config as config_lib
from glide_jax.config import ConfigError
from glide_jax.checkpoints import CheckpointError
from glide_jax.train.checkpointing import ArchitectureMismatch, UnreadableCheckpoint
from glide_jax.train.finetune import InitFromError
from glide_jax.train.loop import NonFiniteLossError, TrainingStopped, train_and_evaluate

# Mistakes in what the user asked for: reported in one line, exit 2.
USAGE_ERRORS = (ConfigError, CheckpointError, ArchitectureMismatch, UnreadableCheckpoint, InitFromError,
                FileNotFoundError, NotADirectoryError, FileExistsError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="train.py", description=__doc__.splitlines()[0],
                                     epilog=config_lib.OVERRIDES_HELP)
    parser.add_argument("--config", default="configs/shapes_base.py",
                        help="experiment config file, FILE or FILE:ARG (default configs/shapes_base.py)")
    parser.add_argument("--workdir", required=True, help="run directory (checkpoints, metrics, samples)")
    return parser


def _exit_quietly(status: int) -> None:
    """Ends the process now, past Orbax's reads still failing in its threads.

    When one array of a damaged checkpoint fails to read, Orbax abandons the
    others, which fail one by one in its background event loop and at the
    interpreter's exit, each printing a traceback with a page of TensorStore
    spec: thousands of lines after the one `error:` line that says it all.
    """
    sys.unraisablehook = lambda unraisable: None
    threading.excepthook = lambda args: None
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def _hide_closed_loop_errors() -> None:
    """Drops one benign report: TensorStore's callbacks into Orbax's event loop after it closed.

    When a checkpoint read fails, Orbax closes the event loop of its reads
    while TensorStore still completes the others; each completion calls
    `loop.call_soon_threadsafe` from a C++ thread, and its RuntimeError("Event
    loop is closed") goes to sys.unraisablehook, whose default prints a
    traceback around the `error:` line. Every other report is kept.
    """
    previous = sys.unraisablehook

    def unraisablehook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)
    sys.unraisablehook = unraisablehook


def main(argv: list[str] | None = None) -> int:
    """Parses the flags, trains; returns the exit status (see the module docstring)."""
    _hide_closed_loop_errors()
    try:
        argv, overrides = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    args = build_parser().parse_args(argv)
    # force: importing Orbax has already given the root logger absl's handler at WARNING.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        force=True)
    logging.getLogger("glide_jax").setLevel(logging.INFO)  # resumed, initialised from, ...
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax and TFDS log every save and read at INFO
    workdir, created = pathlib.Path(args.workdir), False
    try:
        config = config_lib.load_cli_config(args.config, overrides)
        if workdir.exists() and not workdir.is_dir():
            raise ConfigError(f"--workdir {workdir}: exists and is not a directory")
        created = not workdir.exists()
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(f"--workdir {workdir}: cannot be created ({err.strerror})") from None
        train_and_evaluate(config, workdir)
    except TrainingStopped as stopped:  # saved and resumable, but not finished
        logging.warning("%s", stopped)
        return stopped.exit_code
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        if created and workdir.is_dir() and not any(workdir.iterdir()):  # a refused run leaves nothing behind
            with contextlib.suppress(OSError):  # another host of the run may have removed it first
                workdir.rmdir()
        if isinstance(exc, UnreadableCheckpoint):
            _exit_quietly(2)
        return 2
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
