"""glide-jax: GLIDE text-to-image diffusion in JAX/Flax.

Importing the package pulls in no TensorFlow: only `glide_jax.data` uses it.
"""

__version__ = "0.1.0"
