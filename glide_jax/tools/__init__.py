"""glide_jax.tools."""
