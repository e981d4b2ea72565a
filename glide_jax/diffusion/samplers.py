"""Ancestral (DDPM) and DDIM sampling as jittable `lax.scan` loops.

Every function takes the `GaussianDiffusion` and a `model_fn(x, t_original)`
(see `gaussian.py`); arrays are NHWC.

Jitting a whole loop. The loops trace `model_fn` once (inside `lax.scan`)
and are meant to be jitted as a whole. Static (part of the trace, so
changing them retraces): `diffusion`, `model_fn`, `cond_fn`, `denoised_fn`,
`shape`, `clip_denoised`, `return_all_steps`, and whether `noise` /
`step_noises` / `key` are given. Traced (a new value reuses the compiled
loop): `key`, `noise`, `step_noises`, `eta`. For example:

    @jax.jit
    def sample(params, tokens, mask, key):
        def model_fn(x, t):
            return model.apply({"params": params}, x, t, tokens=tokens, mask=mask)
        return p_sample_loop(diffusion, model_fn, (4, 64, 64, 3), key=key)

Building `model_fn` inside the jitted function keeps the parameters traced
arguments rather than constants baked into the executable.

Noise. By default the initial noise and one noise per step come from `key`.
Passing `noise` (the initial x_T) and `step_noises` (S, *shape) instead
replays a recorded trajectory exactly: step k (k = 0 is the noisiest) uses
`step_noises[k]`. As in the reference a noise is used at every step,
including the last one where it is multiplied by 0.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from glide_jax.diffusion.gaussian import GaussianDiffusion, ModelFn

DenoisedFn = Callable[[jnp.ndarray], jnp.ndarray]


def _nonzero_mask(t: jnp.ndarray, x: jnp.ndarray) -> jnp.ndarray:
    """(B, 1, ..., 1) float: 0 where t == 0 (the last step adds no noise)."""
    return (t != 0).astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))


def p_sample(diffusion: GaussianDiffusion, model_fn: ModelFn, x: jnp.ndarray, t: jnp.ndarray,
             noise: jnp.ndarray, *, clip_denoised: bool = True,
             denoised_fn: DenoisedFn | None = None, cond_fn: ModelFn | None = None) -> dict:
    """One ancestral step: x_{t-1} ~ p(x_{t-1} | x_t) (Ho et al. 2020, Algorithm 2).

    Args:
      diffusion: the (respaced) process.
      model_fn: `model_fn(x, t_original) -> (B, H, W, 2C)`.
      x: (B, H, W, C) x_t.
      t: (B,) int step indices of `diffusion`.
      noise: (B, H, W, C) standard normal noise (unused where t == 0).
      clip_denoised: clamp the x_0 prediction to [-1, 1].
      denoised_fn: optional map of the x_0 prediction, applied before the clamp.
      cond_fn: optional `cond_fn(x, t_original) -> grad log p(y | x)`; shifts
        the mean (`condition_mean`).

    Returns:
      {"sample": (B, H, W, C) x_{t-1}, "pred_xstart": (B, H, W, C)}.
    """
    out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised=clip_denoised,
                                    denoised_fn=denoised_fn)
    mean = out["mean"]
    if cond_fn is not None:
        mean = diffusion.condition_mean(cond_fn, out, x, t)
    sample = mean + _nonzero_mask(t, x) * jnp.exp(0.5 * out["log_variance"]) * noise
    return {"sample": sample, "pred_xstart": out["pred_xstart"]}


def ddim_sample(diffusion: GaussianDiffusion, model_fn: ModelFn, x: jnp.ndarray, t: jnp.ndarray,
                noise: jnp.ndarray, *, eta: float | jnp.ndarray = 0.0, clip_denoised: bool = True,
                denoised_fn: DenoisedFn | None = None, cond_fn: ModelFn | None = None) -> dict:
    """One DDIM step (Song et al. 2020, eq. 12).

    eps is re-derived from the (clamped) x_0 prediction; with `cond_fn` the
    score is shifted first (`condition_score`). sigma = eta *
    sqrt((1 - abar_prev) / (1 - abar)) * sqrt(1 - abar / abar_prev).

    Args and returns as in `p_sample`, plus `eta` (0 = deterministic).
    """
    out = diffusion.p_mean_variance(model_fn, x, t, clip_denoised=clip_denoised,
                                    denoised_fn=denoised_fn)
    if cond_fn is not None:
        out = diffusion.condition_score(cond_fn, out, x, t)
    eps = diffusion.predict_eps_from_xstart(x, t, out["pred_xstart"])
    alpha_bar = diffusion.extract("alphas_cumprod", t, x.ndim)
    alpha_bar_prev = diffusion.extract("alphas_cumprod_prev", t, x.ndim)
    sigma = (eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar))
             * jnp.sqrt(1 - alpha_bar / alpha_bar_prev))
    mean_pred = (out["pred_xstart"] * jnp.sqrt(alpha_bar_prev)
                 + jnp.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps)
    sample = mean_pred + _nonzero_mask(t, x) * sigma * noise
    return {"sample": sample, "pred_xstart": out["pred_xstart"]}


def p_sample_loop(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int], *,
                  key: jax.Array | None = None, noise: jnp.ndarray | None = None,
                  step_noises: jnp.ndarray | None = None, clip_denoised: bool = True,
                  denoised_fn: DenoisedFn | None = None, cond_fn: ModelFn | None = None,
                  return_all_steps: bool = False):
    """Ancestral sampling from x_T through every step of `diffusion`.

    Args:
      diffusion: the (respaced) process; S = diffusion.num_timesteps steps.
      model_fn: `model_fn(x, t_original) -> (B, H, W, 2C)`.
      shape: (B, H, W, C) of the samples.
      key: PRNG key for whichever of `noise` / `step_noises` is not given.
      noise: optional (B, H, W, C) initial x_T.
      step_noises: optional (S, B, H, W, C) per-step noises, noisiest step first.
      clip_denoised, denoised_fn, cond_fn: see `p_sample`.
      return_all_steps: also return every step's output.

    Returns:
      The (B, H, W, C) float32 final sample; with `return_all_steps`,
      `(final, {"sample": (S, B, H, W, C), "pred_xstart": (S, B, H, W, C)})`,
      step k = 0 being the noisiest.
    """
    def step(x, t, step_noise):
        return p_sample(diffusion, model_fn, x, t, step_noise, clip_denoised=clip_denoised,
                        denoised_fn=denoised_fn, cond_fn=cond_fn)

    return _sample_loop(diffusion, step, shape, key, noise, step_noises, return_all_steps,
                        zero_step_noise=False)


def ddim_sample_loop(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int], *,
                     key: jax.Array | None = None, noise: jnp.ndarray | None = None,
                     step_noises: jnp.ndarray | None = None, eta: float | jnp.ndarray = 0.0,
                     clip_denoised: bool = True, denoised_fn: DenoisedFn | None = None,
                     cond_fn: ModelFn | None = None, return_all_steps: bool = False):
    """DDIM sampling through every step of `diffusion` (usually "ddimN" or "fast27").

    Arguments and returns as in `p_sample_loop`, plus `eta`. With a Python
    `eta == 0` and no `step_noises`, the step noises (multiplied by sigma =
    0) are zeros, so `key` is only needed for the initial noise.
    """
    def step(x, t, step_noise):
        return ddim_sample(diffusion, model_fn, x, t, step_noise, eta=eta,
                           clip_denoised=clip_denoised, denoised_fn=denoised_fn, cond_fn=cond_fn)

    deterministic = isinstance(eta, (int, float)) and eta == 0
    return _sample_loop(diffusion, step, shape, key, noise, step_noises, return_all_steps,
                        zero_step_noise=deterministic)


def _sample_loop(diffusion, step, shape, key, noise, step_noises, return_all_steps,
                 zero_step_noise):
    """Runs `step(x, t, noise)` for t = S-1 .. 0 under `lax.scan`."""
    shape = tuple(int(s) for s in shape)
    num_steps = diffusion.num_timesteps
    if key is not None:
        noise_key, key = jax.random.split(key)
    if noise is None:
        if key is None:
            raise ValueError("pass `key` or the initial `noise`")
        noise = jax.random.normal(noise_key, shape, jnp.float32)
    noise = jnp.asarray(noise, jnp.float32)
    if noise.shape != shape:
        raise ValueError(f"noise has shape {noise.shape}, expected {shape}")
    if step_noises is not None:
        step_noises = jnp.asarray(step_noises, jnp.float32)
        if step_noises.shape != (num_steps,) + shape:
            raise ValueError(f"step_noises has shape {step_noises.shape}, expected "
                             f"{(num_steps,) + shape} ({num_steps} steps)")
        per_step, draw = step_noises, lambda s: s
    elif key is not None:
        per_step = jax.random.split(key, num_steps)
        draw = lambda k: jax.random.normal(k, shape, jnp.float32)  # noqa: E731
    elif zero_step_noise:
        per_step, draw = jnp.zeros((num_steps,), jnp.float32), lambda _: jnp.zeros(shape, jnp.float32)
    else:
        raise ValueError("pass `key` or `step_noises` for the per-step noise")
    indices = jnp.arange(num_steps - 1, -1, -1, dtype=jnp.int32)

    def body(x, inputs):
        index, source = inputs
        t = jnp.full((shape[0],), index, dtype=jnp.int32)
        out = step(x, t, draw(source))
        return out["sample"], (out if return_all_steps else None)

    final, history = jax.lax.scan(body, noise, (indices, per_step))
    return (final, history) if return_all_steps else final
