"""Samples images from GLIDE checkpoints; see glide_jax/sampling/cli.py for the flags.

  python sample.py --base CKPT [--upsample CKPT] --prompt "a red circle" --out samples/
"""

import os
import sys

from glide_jax.sampling.cli import main

if __name__ == "__main__":
    status = main()
    if status in (130, 143):
        # Interrupted, with its outputs written and closed. A Ctrl-C that lands while XLA compiles can
        # leave JAX's threads in a state that crashes the interpreter's shutdown (SIGSEGV, exit 139).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    sys.exit(status)
