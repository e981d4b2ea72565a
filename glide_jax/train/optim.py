"""AdamW with warm-up and decay, gradient clipping, and EMA (config.optim).

GLIDE does not state its optimizer. The GLIDE presets take guided-diffusion's
TrainLoop defaults: AdamW at a constant 1e-4, no warm-up, no clipping, and
sampling from an exponential moving average of the weights (rate 0.9999).
Warm-up, decay and clipping are here for the small presets and for users who
want them. Several EMA rates can be tracked at once; the first one in
`config.optim.ema_rates` is the one exported for sampling.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import optax


def learning_rate_schedule(optim: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
    """Linear warm-up to `optim.learning_rate`, then constant, cosine or linear decay.

    Args:
      optim: `config.optim`.
      num_steps: optimizer steps in the whole run (`config.train.num_steps`);
        the decay reaches `end_learning_rate_factor * learning_rate` there.

    Returns:
      step (int) -> learning rate (float32 scalar).
    """
    peak = float(optim.learning_rate)
    warmup = int(optim.warmup_steps)
    end = peak * float(optim.end_learning_rate_factor)
    decay_steps = max(num_steps - warmup, 1)
    if optim.schedule == "constant":
        after = optax.constant_schedule(peak)
    elif optim.schedule == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    elif optim.schedule == "linear":
        after = optax.linear_schedule(peak, end, decay_steps)
    else:
        raise ValueError(f"config.optim.schedule = {optim.schedule!r}: unknown schedule")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), after], [warmup])


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """AdamW with the configured schedule, after global-norm clipping if `optim.grad_clip_norm` is set.

    Args:
      config: the full config (`optim` and `train.num_steps`).

    Returns:
      An optax transformation over the float32 parameter tree.
    """
    optim = config.optim
    schedule = learning_rate_schedule(optim, int(config.train.num_steps))
    parts = []
    if optim.grad_clip_norm is not None:
        parts.append(optax.clip_by_global_norm(float(optim.grad_clip_norm)))
    parts.append(optax.adamw(schedule, b1=float(optim.b1), b2=float(optim.b2), eps=float(optim.eps),
                             weight_decay=float(optim.weight_decay)))
    return optax.chain(*parts)


def update_ema(ema_params: Sequence[Any], params: Any, rates: Sequence[float],
               step: jax.Array | None = None) -> tuple[Any, ...]:
    """ema <- rate * ema + (1 - rate) * params, for each rate.

    Args:
      ema_params: one parameter tree per rate.
      params: the parameters after this step's update.
      rates: decay rates, same order as `ema_params`.
      step: with EMA warm-up, the number of updates made before this one:
        each rate is capped at (1 + step) / (10 + step), so that early on the
        average follows the parameters instead of holding on to the random
        initialisation (a 0.99 EMA of a 250-step run still weighs it at 8%
        and samples pure noise). None: the plain rates (guided-diffusion).

    Returns:
      The new EMA trees, as a tuple.
    """
    def one(ema, rate):
        if step is not None:
            count = jnp.asarray(step, jnp.float32)
            rate = jnp.minimum(rate, (1.0 + count) / (10.0 + count))
        return jax.tree_util.tree_map(lambda e, p: rate * e + (1.0 - rate) * p, ema, params)

    return tuple(one(ema, jnp.float32(rate)) for ema, rate in zip(ema_params, rates))
