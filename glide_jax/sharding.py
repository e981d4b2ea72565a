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
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")


def create_mesh(mesh_config: ml_collections.ConfigDict, devices: Sequence[Any] | None = None) -> Mesh:
    """Builds the (data, fsdp, tensor) mesh that `config.mesh` asks for.

    Args:
      mesh_config: `config.mesh`; `data=None` takes every device that fsdp and
        tensor leave over.
      devices: devices to use; defaults to `jax.devices()` (all hosts).

    Returns:
      A Mesh with axis names ("data", "fsdp", "tensor").

    Raises:
      ValueError: if the axis sizes do not multiply to the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    fsdp, tensor = int(mesh_config.fsdp), int(mesh_config.tensor)
    data = mesh_config.data
    if data is None:
        if len(devices) % (fsdp * tensor):
            raise ValueError(f"config.mesh.fsdp * config.mesh.tensor = {fsdp * tensor} does not divide "
                             f"the {len(devices)} devices")
        data = len(devices) // (fsdp * tensor)
    shape = (int(data), fsdp, tensor)
    if int(np.prod(shape)) != len(devices):
        raise ValueError(f"config.mesh (data={data}, fsdp={fsdp}, tensor={tensor}) needs "
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


def batch_sharding(mesh: Mesh, mesh_config: ml_collections.ConfigDict) -> NamedSharding:
    """Sharding of batch arrays: the leading dimension over the "batch" rule's axes."""
    axes = nn.logical_to_mesh_axes(("batch",), logical_rules(mesh_config))
    return NamedSharding(mesh, P(*axes))


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
