"""Classifier-free guidance (Ho & Salimans 2021; GLIDE, Nichol et al. 2021, eq. 3).

Guidance is a plain wrapper around `model_fn`, so the same samplers run
guided and unguided models.
"""

from __future__ import annotations

import jax.numpy as jnp

from glide_jax.diffusion.gaussian import ModelFn


def classifier_free_guidance(model_fn: ModelFn, guidance_scale: float | jnp.ndarray) -> ModelFn:
    """Wraps `model_fn` with classifier-free guidance, as glide-text2im's notebooks do.

    The batch holds the conditional rows first and the unconditional rows
    (empty captions) second, both halves bound into `model_fn`'s conditioning.
    Only the first half of x_t is sampled: the model runs on
    concat([x[:B/2], x[:B/2]]), and the guided eps = uncond + s * (cond -
    uncond) is returned for both halves, so both halves follow the same
    trajectory. The variance channels are passed through per row (the
    conditional rows keep the conditional variance).

    Args:
      model_fn: `model_fn(x, t) -> (B, H, W, 2C)` (eps, then variance values)
        for the conditional-then-unconditional batch.
      guidance_scale: s; 1 gives the conditional model, 0 the unconditional.

    Returns:
      `guided(x, t) -> (B, H, W, 2C)` with x (B, H, W, C), B even.
    """

    def guided(x: jnp.ndarray, t: jnp.ndarray) -> jnp.ndarray:
        batch, channels = x.shape[0], x.shape[-1]
        if batch % 2:
            raise ValueError(f"classifier-free guidance needs an even batch "
                             f"[conditional; unconditional], got x {x.shape}")
        half = x[: batch // 2]
        output = model_fn(jnp.concatenate([half, half], axis=0), t)
        eps, rest = output[..., :channels], output[..., channels:]
        cond_eps, uncond_eps = eps[: batch // 2], eps[batch // 2:]
        half_eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
        return jnp.concatenate([jnp.concatenate([half_eps, half_eps], axis=0), rest], axis=-1)

    return guided
