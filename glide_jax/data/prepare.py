"""Prepares the dataset a config names, once, before training.

    python -m glide_jax.data.prepare --config configs/shapes_base.py \
        [--config.data.data_dir=/data/tfds --config.data.shapes_train_size=50000]

Builds glide_shapes or the folder dataset, or downloads and prepares a TFDS
catalogue dataset, into config.data.data_dir and prints a JSON summary (split
sizes; for a folder, the skipped files and empty-caption counts). Training
prepares a missing dataset by itself; run this first on multi-host set-ups so
that the hosts do not all write the same data_dir. A bad config file, key or
value, a missing folder or an unreadable manifest is one `error:` line and
exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from glide_jax import config as config_lib


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glide_jax.data.prepare", description=__doc__.splitlines()[0],
                                     epilog=config_lib.OVERRIDES_HELP)
    parser.add_argument("--config", required=True, help="experiment config file, e.g. configs/shapes_base.py")
    try:
        argv, overrides = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        config = config_lib.load_cli_config(args.config, overrides)
        from glide_jax.data import sources  # pylint: disable=import-outside-toplevel  (imports TensorFlow)

        summary = sources.prepare_dataset(config.data)
    except (config_lib.ConfigError, FileNotFoundError, NotADirectoryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
