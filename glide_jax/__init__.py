"""glide-jax: GLIDE text-to-image diffusion in JAX/Flax.

Importing the package pulls in no TensorFlow: only `glide_jax.data` uses it.
Subpackages load on first use, so `import glide_jax` then
`glide_jax.sampling.load_pipeline(...)` works.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("checkpoints", "config", "convert", "data", "diffusion", "imaging", "models", "sampling",
               "sharding", "text", "tools", "train")


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"glide_jax.{name}")
    raise AttributeError(f"module 'glide_jax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_SUBMODULES])
