"""Counts a config's parameters without allocating them.

Usage:
  python -m glide_jax.tools.count_params [--config] configs/glide_base.py [--config.KEY=VALUE ...]

Prints `params: N` (the exact number of scalars in the Flax `params` tree),
computed with `jax.eval_shape` on `factory.create_model(config)`, so even the
3.5B-parameter paper preset is counted in seconds without memory.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Callable

import jax
import ml_collections

from glide_jax import config as config_lib


def count_params(config: ml_collections.ConfigDict) -> int:
    """Number of parameter scalars of the network `config` describes."""
    from glide_jax.models import factory  # keeps `--help` free of model imports

    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(factory.abstract_params(config)))


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m glide_jax.tools.count_params",
                                     description=__doc__.splitlines()[0], epilog=config_lib.OVERRIDES_HELP)
    parser.add_argument("config", nargs="?", help="config file with get_config(), e.g. configs/glide_base.py")
    parser.add_argument("--config", dest="config_flag", metavar="CONFIG", help="the same, as train.py takes it")
    try:
        argv, overrides = config_lib.split_overrides(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        if (args.config is None) == (args.config_flag is None):
            parser.error("give the config file once, as CONFIG or --config CONFIG")
        config = config_lib.load_cli_config(args.config or args.config_flag, overrides)
    except config_lib.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out(f"params: {count_params(config)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
