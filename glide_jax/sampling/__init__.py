"""glide_jax.sampling."""
