"""Gaussian diffusion math and samplers (NHWC, model-agnostic).

Nothing here owns a network: every function takes `model_fn(x, t_original)`.
See docs/ARCHITECTURE.md, section "Diffusion".
"""

from glide_jax.diffusion.gaussian import (
    GaussianDiffusion,
    LossType,
    ModelMeanType,
    ModelVarType,
    create_gaussian_diffusion,
    diffusion_from_config,
)
from glide_jax.diffusion.guidance import classifier_free_guidance
from glide_jax.diffusion.samplers import ddim_sample, ddim_sample_loop, p_sample, p_sample_loop
from glide_jax.diffusion.schedules import get_named_beta_schedule, space_timesteps

__all__ = [
    "GaussianDiffusion", "LossType", "ModelMeanType", "ModelVarType",
    "create_gaussian_diffusion", "diffusion_from_config", "classifier_free_guidance",
    "ddim_sample", "ddim_sample_loop", "p_sample", "p_sample_loop",
    "get_named_beta_schedule", "space_timesteps",
]
