"""glide_jax.text."""
