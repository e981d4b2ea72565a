"""glide_jax.diffusion."""
