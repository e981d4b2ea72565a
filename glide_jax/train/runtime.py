"""Process-level concerns of a run: multi-host start-up, stop signals, host arrays.

* `maybe_initialize_distributed` calls `jax.distributed.initialize()` when
  `config.train.distributed` is set, when `config.train` names the
  coordinator, process count or process id, or when the environment names a
  coordinator (JAX_COORDINATOR_ADDRESS, as cluster launchers set it); it must
  run before anything touches the devices.
* `StopSignal` turns SIGTERM/SIGINT into a flag that the loop polls after
  every step, so a pre-empted run saves a checkpoint and exits cleanly
  instead of dying mid-step. All hosts agree on the flag.
* `gather_to_host` brings a (possibly multi-host sharded) tree to numpy on
  every host, for exports and sample grids.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

COORDINATOR_ENV = "JAX_COORDINATOR_ADDRESS"


def maybe_initialize_distributed(config: ml_collections.ConfigDict) -> bool:
    """Initialises multi-host JAX if the config or the environment asks for it.

    Returns:
      True if `jax.distributed.initialize()` was called here.
    """
    train = config.train
    given = {"coordinator_address": train.coordinator_address, "num_processes": train.num_processes,
             "process_id": train.process_id}
    wanted = (bool(train.distributed) or any(v is not None for v in given.values())
              or bool(os.environ.get(COORDINATOR_ENV)))
    if not wanted or jax.distributed.is_initialized():
        return False
    jax.distributed.initialize(**{key: value for key, value in given.items() if value is not None})
    return True


class StopSignal:
    """Context manager: SIGTERM/SIGINT set a flag instead of killing the process.

    A second signal of the same kind while the flag is set restores the
    default behaviour (so a user can still interrupt a stuck save with a
    second Ctrl-C). Handlers are only installed in the main thread.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame):
        del frame
        if self.received is not None:
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
        self.received = signum

    def __enter__(self) -> "StopSignal":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def requested(self) -> bool:
        """True on every host once any host received a stop signal."""
        local = self.received is not None
        if jax.process_count() == 1:
            return local
        flags = multihost_utils.process_allgather(np.asarray(int(local), np.int32))
        return bool(np.max(flags))


def gather_to_host(tree: Any) -> Any:
    """Numpy copies of a tree of (possibly sharded, multi-host) arrays on every host."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)
    return multihost_utils.process_allgather(tree, tiled=True)
