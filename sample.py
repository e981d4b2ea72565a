"""Samples images from GLIDE checkpoints; see glide_jax/sampling/cli.py for the flags.

  python sample.py --base CKPT [--upsample CKPT] --prompt "a red circle" --out samples/
"""

import sys

from glide_jax.sampling.cli import main

if __name__ == "__main__":
    sys.exit(main())
