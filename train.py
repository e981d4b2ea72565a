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

import logging
import pathlib
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from glide_jax.config import ConfigError
from glide_jax.checkpoints import CheckpointError
from glide_jax.train.checkpointing import ArchitectureMismatch
from glide_jax.train.finetune import InitFromError
from glide_jax.train.loop import NonFiniteLossError, TrainingStopped, train_and_evaluate

# Mistakes in what the user asked for: reported in one line, exit 2.
USAGE_ERRORS = (ConfigError, CheckpointError, ArchitectureMismatch, InitFromError, FileNotFoundError,
                NotADirectoryError, FileExistsError)
_NONE_OVERRIDE = re.compile(r"--config\.([A-Za-z_][\w.]*)=None")
_none_keys: list[str] = []
_CONFIG = _WORKDIR = None  # the flags, defined by define_flags()


def define_flags() -> None:
    """--config (with its --config.KEY=VALUE overrides) and --workdir.

    ml_collections loads the config file and resolves the overrides' keys
    here already, so a missing file or an unknown key fails in this call.
    """
    global _CONFIG, _WORKDIR
    _CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes_base.py", "experiment config file",
                                              lock_config=True)
    _WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, samples)", required=True)


def _config_error(exc: Exception) -> ConfigError:
    """ml_collections' own errors, as one readable line."""
    text = str(exc.args[0] if exc.args else exc).strip("'\"").replace("\\'", "'").replace("\\n", " ")
    text = " ".join(text.split())
    if isinstance(exc, (KeyError, AttributeError)):
        text = f"unknown key {text}"
    return ConfigError(f"--config: {text}")


def split_none_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
    """(argv without `--config.KEY=None`, those KEYs).

    ml_collections parses an override with the field's type, so int('None')
    fails for the optional fields whose documented "off" is None
    (train.sample_every, optim.grad_clip_norm, ...); they are set after loading.
    """
    kept, keys = [], []
    for arg in argv:
        match = _NONE_OVERRIDE.fullmatch(arg)
        if match:
            keys.append(match.group(1))
        else:
            kept.append(arg)
    return kept, keys


def _load_config():
    try:
        config = _CONFIG.value
        config.get("model")  # a file that failed to load raises only when read
    except (OSError, AttributeError, KeyError, TypeError, ValueError) as exc:  # file, key or value
        raise _config_error(exc) from None
    for key in _none_keys:
        *sections, field = key.split(".")
        node = config
        for part in sections:
            node = node.get(part)
            if node is None:
                raise ConfigError(f"--config.{key}=None: config has no section {part!r}")
        if field not in node:
            raise ConfigError(f"--config.{key}=None: config.{key} does not exist")
        node[field] = None  # validation says if the field may not be None
    return config


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax and TFDS log every save and read at INFO
    try:
        workdir = pathlib.Path(_WORKDIR.value)
        if workdir.exists() and not workdir.is_dir():
            raise ConfigError(f"--workdir {workdir}: exists and is not a directory")
        train_and_evaluate(_load_config(), workdir)
    except TrainingStopped as stopped:  # saved and resumable, but not finished
        logging.warning("%s", stopped)
        sys.exit(stopped.exit_code)
    except USAGE_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLossError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    sys.argv, _none_keys = split_none_overrides(sys.argv)
    try:  # parsed here, so that a bad file, key or value is one line, not a traceback
        define_flags()
        app.define_help_flags()  # --help, -h, --helpfull (app.run would define them only after parsing)
        remaining = flags.FLAGS(sys.argv)
    except flags.Error as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (OSError, AttributeError, KeyError, TypeError, ValueError) as error:
        print(f"error: {_config_error(error)}", file=sys.stderr)
        sys.exit(2)
    app.run(main, flags_parser=lambda argv: remaining)
