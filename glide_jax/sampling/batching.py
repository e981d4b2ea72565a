"""The batching and sharding plan of sampling.

Prompts are cut into batches of `batch_size`. Every batch, the last one
included, is padded to the same size, a multiple of the number of devices,
so one compiled program serves them all and the batch axis splits evenly
over a 1-D mesh (`NamedSharding(mesh, P("data"))`). Parameters are
replicated. Padding rows carry an empty prompt and are dropped at the end.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

BATCH_AXIS = "data"


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over `devices` (default: all local devices) named "data"."""
    devices = list(devices) if devices is not None else jax.local_devices()
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.asarray(devices), (BATCH_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Splits the leading (batch) axis over the mesh."""
    return NamedSharding(mesh, P(BATCH_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (parameters, scalars)."""
    return NamedSharding(mesh, P())


def padded_batch_size(batch_size: int, num_devices: int) -> int:
    """The smallest multiple of `num_devices` that is >= `batch_size`."""
    if batch_size <= 0 or num_devices <= 0:
        raise ValueError(f"batch_size {batch_size} and num_devices {num_devices} must be positive")
    return -(-batch_size // num_devices) * num_devices


@dataclasses.dataclass(frozen=True)
class Batch:
    """One batch of prompts, padded to the plan's size.

    Attributes:
      index: position of the batch in the run (0, 1, ...); seeds its noise.
      prompts: `size` prompts; padding rows are "".
      num_real: how many leading rows are real prompts.
    """

    index: int
    prompts: tuple[str, ...]
    num_real: int


def plan_batches(prompts: Sequence[str], batch_size: int, num_devices: int) -> list[Batch]:
    """Cuts prompts into equally sized, padded batches.

    Args:
      prompts: at least one prompt.
      batch_size: real prompts per batch (at most; the last batch may hold fewer).
      num_devices: devices on the mesh; each batch is padded to a multiple of it.

    Returns:
      Batches of `padded_batch_size(min(batch_size, len(prompts)), num_devices)`
      rows each, so that a single prompt does not pay for a large batch.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts to sample")
    per_batch = min(batch_size, len(prompts))
    size = padded_batch_size(per_batch, num_devices)
    batches = []
    for index, start in enumerate(range(0, len(prompts), per_batch)):
        chunk = prompts[start:start + per_batch]
        batches.append(Batch(index, tuple(chunk) + ("",) * (size - len(chunk)), len(chunk)))
    return batches
