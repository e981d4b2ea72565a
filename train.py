"""Trains a GLIDE model (base, upsampler, inpainting or noised CLIP).

    python train.py --config configs/shapes_base.py --workdir runs/shapes_base \
        [--config.train.num_steps=2000 --config.mesh.fsdp=8 ...]

Everything lives in `glide_jax.train.loop.train_and_evaluate`; a workdir that
already holds a checkpoint resumes from it. SIGTERM or SIGINT (Ctrl-C) save a
checkpoint and exit with 128 + the signal number (143, 130): the run is
resumable, not finished. See docs/ARCHITECTURE.md, "Training".
"""

import logging
import sys

from absl import app, flags
from ml_collections import config_flags

from glide_jax.train.loop import TrainingStopped, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", "configs/shapes_base.py", "experiment config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (checkpoints, metrics, samples)", required=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # Orbax and TFDS log every save and read at INFO
    try:
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except TrainingStopped as stopped:  # saved and resumable, but not finished
        logging.warning("%s", stopped)
        sys.exit(stopped.exit_code)


if __name__ == "__main__":
    app.run(main)
