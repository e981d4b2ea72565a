"""The training state and its sharded creation.

The state is created already sharded, so that a large model never exists on
one device: `jax.eval_shape` gives the abstract (logically boxed) state,
`glide_jax.sharding.tree_shardings` turns its logical axis names into
NamedShardings, and `jax.jit(init, out_shardings=...)` materialises each shard
where it belongs.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh

from glide_jax import sharding as sharding_lib


@flax.struct.dataclass
class TrainState:
    """Everything a step changes, as one pytree (saved whole in checkpoints).

    Attributes:
      step: () int32, optimizer steps taken so far.
      params: float32 parameter tree (the `params` collection of the model).
      opt_state: the optax state (AdamW moments: same shapes as params).
      ema_params: tuple of parameter trees, one per `config.optim.ema_rates`.
      rng: (2,) uint32 base key; step s uses `jax.random.fold_in(rng, s)`, so
        a resumed run draws exactly the noise an uninterrupted one would.
    """

    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: tuple[Any, ...]
    rng: jax.Array


def init_fn(model: nn.Module, optimizer: optax.GradientTransformation, example_inputs: dict[str, Any],
            num_ema: int) -> Callable[[jax.Array], TrainState]:
    """Returns rng -> boxed TrainState (params keep their logical-axis boxes).

    Optimizer moments and EMA copies are built from the boxed params, so they
    carry the same logical names and shard like the params.
    """

    def init(rng: jax.Array) -> TrainState:
        param_rng, dropout_rng, state_rng = jax.random.split(rng, 3)
        variables = model.init({"params": param_rng, "dropout": dropout_rng}, **example_inputs)
        params = variables["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=optimizer.init(params),
            ema_params=tuple(params for _ in range(num_ema)),
            rng=state_rng,
        )

    return init


def create_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                       optimizer: optax.GradientTransformation, example_inputs: dict[str, Any],
                       mesh: Mesh) -> tuple[TrainState, TrainState]:
    """Initialises a sharded TrainState from `config.train.seed`.

    Args:
      config: the full config (train.seed, optim.ema_rates, mesh).
      model: from `glide_jax.models.factory.create_model`.
      optimizer: from `glide_jax.train.optim.create_optimizer`.
      example_inputs: keyword arguments for `model.init` (batch size 1 is enough).
      mesh: from `glide_jax.sharding.create_mesh`.

    Returns:
      (state, shardings): unboxed float32 state laid out on `mesh`, and the
      matching tree of NamedSharding.
    """
    state_shardings, _ = abstract_train_state(config, model, optimizer, example_inputs, mesh)
    init = init_fn(model, optimizer, example_inputs, len(config.optim.ema_rates))
    rng = jax.random.PRNGKey(int(config.train.seed))
    state = jax.jit(lambda r: nn.unbox(init(r)), out_shardings=state_shardings)(rng)
    return state, state_shardings


def abstract_train_state(config: ml_collections.ConfigDict, model: nn.Module,
                         optimizer: optax.GradientTransformation, example_inputs: dict[str, Any],
                         mesh: Mesh) -> tuple[TrainState, TrainState]:
    """(shardings, abstract state) without allocating anything.

    The abstract state is a TrainState of jax.ShapeDtypeStruct carrying their
    shardings: the restore target for checkpoints.
    """
    init = init_fn(model, optimizer, example_inputs, len(config.optim.ema_rates))
    boxed = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = sharding_lib.tree_shardings(boxed, mesh, config.mesh)
    abstract = jax.tree_util.tree_map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), nn.unbox(boxed), shardings)
    return shardings, abstract
