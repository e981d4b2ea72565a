"""Tests of glide_jax.diffusion."""
