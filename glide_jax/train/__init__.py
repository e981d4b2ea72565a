"""glide_jax.train."""
