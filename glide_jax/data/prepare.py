"""Prepares the dataset a config names, once, before training.

    python -m glide_jax.data.prepare --config configs/shapes_base.py \
        [--config.data.data_dir=/data/tfds --config.data.shapes_train_size=50000]

Builds glide_shapes or the folder dataset, or downloads and prepares a TFDS
catalogue dataset, into config.data.data_dir and prints a JSON summary (split
sizes; for a folder, the skipped files and empty-caption counts). Training
prepares a missing dataset by itself; run this first on multi-host set-ups so
that the hosts do not all write the same data_dir. A bad config value, a
missing folder or an unreadable manifest is one `error:` line and exit code 2.
"""

import json
import sys

from absl import app
from ml_collections import config_flags

from glide_jax import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "experiment config file", lock_config=True)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = config_lib.validate(_CONFIG.value)
        from glide_jax.data import sources  # pylint: disable=import-outside-toplevel  (imports TensorFlow)

        summary = sources.prepare_dataset(config.data)
    except (config_lib.ConfigError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    app.run(main)
