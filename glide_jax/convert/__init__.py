"""glide_jax.convert."""
