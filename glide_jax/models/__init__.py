"""glide_jax.models."""
