"""One optimizer step: `train_step(state, batch, rng) -> (state, metrics)`.

Gradients may be accumulated over `config.optim.grad_accum_steps` equal
micro-batches (a `lax.scan`, so memory holds one micro-batch's activations).
For the diffusion losses, batch means over independent examples, the mean
of the micro-batch gradients is the full batch's in expectation (each
micro-batch draws its own timesteps and noise, so one seed's numbers
differ); the CLIP loss is not: its negatives come from the micro-batch only
(configs/glide_clip.py). Rematerialisation is the model's business
(`config.model.remat`). After the AdamW update, every EMA tree moves towards
the new parameters.

`jit_train_step` compiles it with explicit shardings and donates the old
state, so the step updates the parameters in place; it traces the step
inside `sharding.constraints`, so the networks' activation constraints
follow `config.mesh.rules`.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import NamedSharding

from glide_jax import sharding as sharding_lib
from glide_jax.train import optim as optim_lib
from glide_jax.train.losses import LossFn
from glide_jax.train.state import TrainState

TrainStep = Callable[[TrainState, dict[str, jax.Array], jax.Array], tuple[TrainState, dict[str, jax.Array]]]


def _micro_batches(batch: dict[str, jax.Array], count: int) -> dict[str, jax.Array]:
    """(B, ...) -> (count, B // count, ...), micro-batch j = rows j, j + count, ...

    Strided rows keep every micro-batch spread over all the batch shards.
    """
    def split(x):
        rows = x.shape[0] // count
        return jnp.swapaxes(x.reshape((rows, count) + x.shape[1:]), 0, 1)

    return jax.tree_util.tree_map(split, batch)


def _gradients(loss_fn: LossFn, params: Any, batch: dict[str, jax.Array], rng: jax.Array,
               accum_steps: int) -> tuple[Any, dict[str, jax.Array]]:
    """Mean gradient and metrics over `accum_steps` micro-batches."""
    grad_fn = jax.grad(loss_fn, has_aux=True)
    if accum_steps == 1:
        return grad_fn(params, batch, rng)
    micro = _micro_batches(batch, accum_steps)

    def body(carry, inputs):
        grads_sum, metrics_sum = carry
        index, micro_batch = inputs
        grads, metrics = grad_fn(params, micro_batch, jax.random.fold_in(rng, index))
        add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)  # noqa: E731
        return (add(grads_sum, grads), add(metrics_sum, metrics)), None

    zero_grads = jax.tree_util.tree_map(jnp.zeros_like, params)
    first = jax.tree_util.tree_map(lambda x: x[0], micro)
    zero_metrics = jax.tree_util.tree_map(
        lambda m: jnp.zeros(m.shape, m.dtype), jax.eval_shape(lambda: grad_fn(params, first, rng)[1]))
    (grads, metrics), _ = jax.lax.scan(body, (zero_grads, zero_metrics), (jnp.arange(accum_steps), micro))
    scale = 1.0 / accum_steps
    return (jax.tree_util.tree_map(lambda g: g * scale, grads),
            jax.tree_util.tree_map(lambda m: m * scale, metrics))


def make_train_step(config: ml_collections.ConfigDict, loss_fn: LossFn,
                    optimizer: optax.GradientTransformation) -> TrainStep:
    """Builds the (unjitted) train step.

    Args:
      config: the full config (optim.grad_accum_steps, optim.ema_rates, train.num_steps).
      loss_fn: from `glide_jax.train.losses.create_loss_fn`.
      optimizer: from `glide_jax.train.optim.create_optimizer`.

    Returns:
      train_step(state, batch, rng) -> (new state, metrics). Metrics are
      float32 scalars: the loss terms, `grad_norm` (before clipping),
      `param_norm` and `learning_rate`.
    """
    accum_steps = int(config.optim.grad_accum_steps)
    rates = tuple(float(r) for r in config.optim.ema_rates)
    ema_warmup = bool(config.optim.ema_warmup)
    schedule = optim_lib.learning_rate_schedule(config.optim, int(config.train.num_steps))

    def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array):
        grads, metrics = _gradients(loss_fn, state.params, batch, rng, accum_steps)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        new_state = state.replace(
            step=state.step + 1, params=params, opt_state=opt_state,
            ema_params=optim_lib.update_ema(state.ema_params, params, rates, state.step if ema_warmup else None))
        metrics = dict(metrics, grad_norm=optax.tree.norm(grads), param_norm=optax.tree.norm(params),
                       learning_rate=jnp.asarray(schedule(state.step), jnp.float32))
        return new_state, metrics

    return train_step


def jit_train_step(train_step: TrainStep, state_shardings: TrainState, batch_sharding: NamedSharding,
                   mesh_config: ml_collections.ConfigDict) -> TrainStep:
    """jits `train_step` with explicit in/out shardings, donating the old state.

    Args:
      train_step: from `make_train_step`.
      state_shardings: the TrainState of NamedSharding from `create_train_state`.
      batch_sharding: applied to every batch array (leading batch axis); its
        mesh is the step's, and the rng and the metrics are replicated over it.
      mesh_config: `config.mesh`; its rules place the networks' `sharding.constrain` calls.
    """
    mesh = batch_sharding.mesh
    replicated = sharding_lib.replicated(mesh)

    @functools.wraps(train_step)
    def constrained_step(state, batch, rng):
        with sharding_lib.constraints(mesh, mesh_config):
            return train_step(state, batch, rng)

    return jax.jit(constrained_step, in_shardings=(state_shardings, batch_sharding, replicated),
                   out_shardings=(state_shardings, replicated), donate_argnums=(0,))


def jit_eval_step(loss_fn: LossFn, params_sharding: Any, batch_sharding: NamedSharding,
                  mesh_config: ml_collections.ConfigDict) -> Callable[[Any, dict[str, jax.Array], jax.Array],
                                                                       dict[str, jax.Array]]:
    """jits `eval_step(params, batch, rng) -> metrics`: the loss terms of one batch, no update.

    Args:
      loss_fn: from `glide_jax.train.losses.create_loss_fn(..., deterministic=True)`.
      params_sharding: the params' tree of NamedSharding (an EMA tree shares it).
      batch_sharding, mesh_config: as for `jit_train_step`.
    """
    mesh = batch_sharding.mesh
    replicated = sharding_lib.replicated(mesh)

    def eval_step(params, batch, rng):
        with sharding_lib.constraints(mesh, mesh_config):
            return loss_fn(params, batch, rng)[1]

    return jax.jit(eval_step, in_shardings=(params_sharding, batch_sharding, replicated), out_shardings=replicated)
