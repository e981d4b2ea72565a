"""Device mesh and logical-axis rules -> NamedSharding (config.mesh).

The networks name the axes of their parameters with
`nn.with_logical_partitioning` ("embed", "mlp", "heads", ...). `config.mesh`
builds a mesh with the axes `data`, `fsdp` and `tensor` and says, in
`config.mesh.rules`, which mesh axes each logical name is split over:

  data    copies of the model, each seeing its own slice of the batch;
  fsdp    also splits the batch, and shards parameters and optimizer state
          (ZeRO-3 / fully sharded data parallel);
  tensor  splits attention heads and MLP width inside a layer.

Logical names that no rule mentions stay replicated. Because not every
parameter has a name that maps onto `fsdp` (biases, norms, the 3x3 conv
kernels of a U-Net), `config.mesh.fsdp_fallback` shards any leaf that the
rules leave off `fsdp` along its largest dimension divisible by the fsdp size,
as big_vision's "fsdp" strategy does; with it, every device holds about
1/fsdp of the parameters and optimizer state.

Everything is jitted with these shardings; nothing uses pmap.

Inside `constraints(mesh, mesh_config)` (the train step is traced there),
`constrain(x, logical_axes)` pins an intermediate to the sharding its logical
names map to; outside it (one-device sampling, the tests) it returns x. The
networks use it where XLA's own sharding propagation picks badly: an
embedding table is gathered over "fsdp" before its lookup, so the lookup's
gradient is a local scatter-add and a reduce-scatter rather than a reshard
of the batch-split cotangent onto the table's embedding axis (which XLA can
only do by replicating it, "involuntary full rematerialization", when
"tensor" also splits the table).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from glide_jax.config import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")
# (mesh, logical rules) while `constraints` is active.
_ACTIVE: contextvars.ContextVar[tuple[Mesh, tuple] | None] = contextvars.ContextVar("glide_jax_mesh", default=None)


def create_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds the (data, fsdp, tensor) mesh that `config.mesh` asks for.

    Args:
      mesh_config: `config.mesh`; `data=None` takes every device that fsdp and
        tensor leave over.
      devices: devices to use; defaults to `jax.devices()` (all hosts).

    Returns:
      A Mesh with axis names ("data", "fsdp", "tensor").

    Raises:
      ConfigError: if the axis sizes do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    fsdp, tensor = int(mesh_config.fsdp), int(mesh_config.tensor)
    data = mesh_config.data
    if data is None:
        if len(devices) % (fsdp * tensor):
            raise ConfigError(f"config.mesh.fsdp * config.mesh.tensor = {fsdp * tensor} does not divide "
                             f"the {len(devices)} devices")
        data = len(devices) // (fsdp * tensor)
    shape = (int(data), fsdp, tensor)
    if int(np.prod(shape)) != len(devices):
        raise ConfigError(f"config.mesh (data={data}, fsdp={fsdp}, tensor={tensor}) needs "
                         f"{int(np.prod(shape))} devices but {len(devices)} are available")
    try:  # physical topology aware where the platform supports it
        grid = mesh_utils.create_device_mesh(shape, devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


def logical_rules(mesh_config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
    """`config.mesh.rules` as the tuple of pairs flax's logical helpers take."""
    return tuple((str(name), tuple(axes) if isinstance(axes, list) else axes) for name, axes in mesh_config.rules)


def _axis_size(mesh: Mesh, axes) -> int:
    if axes is None:
        return 1
    axes = axes if isinstance(axes, tuple) else (axes,)
    return int(np.prod([mesh.shape[a] for a in axes]))


def _uses(axes, name: str) -> bool:
    return axes == name or (isinstance(axes, tuple) and name in axes)


def _fit_spec(spec: P, shape: tuple[int, ...], mesh: Mesh, fallback: bool) -> P:
    """Drops mesh axes of size 1 or that do not divide their dimension; adds the fsdp fallback.

    The fallback puts "fsdp" on the largest dimension it divides that no rule
    split, else on the largest already split dimension that the product of
    its axes and fsdp still divides (a tensor-split bias: ("tensor", "fsdp")).
    """
    entries = list(spec) + [None] * (len(shape) - len(spec))
    # Axes of size 1 split nothing; dropping them frees the dimension for the fallback.
    entries = [None if _axis_size(mesh, axes) == 1 or dim % _axis_size(mesh, axes) else axes
               for axes, dim in zip(entries, shape)]
    fsdp = mesh.shape["fsdp"]
    if fallback and fsdp > 1 and not any(_uses(axes, "fsdp") for axes in entries):
        free = [i for i, (axes, dim) in enumerate(zip(entries, shape)) if axes is None and dim % fsdp == 0]
        # With no free dimension (a bias already split over "tensor", say), fsdp
        # splits an already split one further where the sizes still divide.
        split = [i for i, (axes, dim) in enumerate(zip(entries, shape))
                 if axes is not None and dim % (_axis_size(mesh, axes) * fsdp) == 0]
        if free or split:
            largest = max(free or split, key=lambda i: (shape[i], -i))
            axes = entries[largest]
            entries[largest] = "fsdp" if axes is None else (*(axes if isinstance(axes, tuple) else (axes,)), "fsdp")
    while entries and entries[-1] is None:
        entries.pop()
    return P(*entries)


def tree_shardings(abstract_boxed: Any, mesh: Mesh, mesh_config: ml_collections.ConfigDict) -> Any:
    """NamedShardings for a tree whose leaves may be logically partitioned.

    Args:
      abstract_boxed: the output of `jax.eval_shape` on an init function, with
        `nn.LogicallyPartitioned` boxes where the networks named their axes
        (optimizer moments built from boxed params keep the boxes).
      mesh: from `create_mesh`.
      mesh_config: `config.mesh` (rules and fsdp_fallback).

    Returns:
      A tree of NamedSharding with the structure of `nn.unbox(abstract_boxed)`.
    """
    logical = nn.get_partition_spec(abstract_boxed)
    mesh_specs = nn.logical_to_mesh(logical, logical_rules(mesh_config))
    shapes = nn.unbox(abstract_boxed)
    is_spec = lambda x: isinstance(x, P)  # noqa: E731
    spec_leaves, treedef = jax.tree_util.tree_flatten(mesh_specs, is_leaf=is_spec)
    shape_leaves = treedef.flatten_up_to(shapes)
    out = [NamedSharding(mesh, _fit_spec(spec, tuple(s.shape), mesh, bool(mesh_config.fsdp_fallback)))
           for spec, s in zip(spec_leaves, shape_leaves)]
    return jax.tree_util.tree_unflatten(treedef, out)


@contextlib.contextmanager
def constraints(mesh: Mesh, mesh_config: ml_collections.ConfigDict) -> Iterator[None]:
    """Makes `constrain` pin arrays on `mesh` by `mesh_config.rules` (while tracing a step)."""
    token = _ACTIVE.set((mesh, logical_rules(mesh_config)))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
    """x constrained to the sharding its logical axes map to; x unchanged outside `constraints`.

    Mesh axes that do not divide their dimension are dropped, as for the
    parameters (no fsdp fallback: a None axis stays whole). The context acts
    when a function is traced, and jax.jit's trace cache does not see it:
    jit a function whose every trace happens inside the context, as
    `train.step.jit_train_step` does.
    """
    active = _ACTIVE.get()
    if active is None:
        return x
    mesh, rules = active
    spec = _fit_spec(nn.logical_to_mesh_axes(logical_axes, rules), tuple(x.shape), mesh, fallback=False)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def batch_sharding(mesh: Mesh, mesh_config: ml_collections.ConfigDict) -> NamedSharding:
    """Sharding of batch arrays: the leading dimension over the "batch" rule's axes."""
    axes = nn.logical_to_mesh_axes(("batch",), logical_rules(mesh_config))
    return NamedSharding(mesh, P(*axes))


def rows_held(sharding: NamedSharding, rows: int, devices: Sequence[Any]) -> int:
    """How many distinct rows of a (rows, ...) array laid out with `sharding` live on `devices`."""
    index_map = sharding.devices_indices_map((rows,))
    held: set[int] = set()
    for device in devices:
        held.update(range(*index_map[device][0].indices(rows)))
    return len(held)


def replicated(mesh: Mesh) -> NamedSharding:
    """A fully replicated sharding (scalars, RNG keys, metrics)."""
    return NamedSharding(mesh, P())


def shard_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each host's share of a batch into global arrays.

    Args:
      batch: this process's rows, numpy arrays with equal leading size.
      sharding: from `batch_sharding`.

    Returns:
      Global jax.Arrays whose leading size is the host size times the process
      count, laid out with `sharding`.
    """
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value))
            for key, value in batch.items()}
