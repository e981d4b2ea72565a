"""glide_jax.data."""
