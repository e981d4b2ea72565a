"""Checkpointer: a single-process save writes replicated arrays without compiling."""

import logging

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from glide_jax.train import checkpointing


def test_single_process_save_of_replicated_arrays_compiles_nothing(tmp_path, caplog):
    # Orbax's replica-parallel default would compile a slice per array and device here.
    replicated = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec())
    state = {"kernel": jax.device_put(np.ones((8, 4), np.float32), replicated),
             "bias": jax.device_put(np.arange(16, dtype=np.float32), replicated)}
    checkpointer = checkpointing.Checkpointer(tmp_path, keep=1, async_save=False)
    try:
        with jax.log_compiles(True), caplog.at_level(logging.DEBUG):
            checkpointer.save(1, state, {"position": 3})
            checkpointer.wait()
    finally:
        checkpointer.close()
    compiled = [r.getMessage()[:120] for r in caplog.records if "Compiling" in r.getMessage()]
    assert not compiled, compiled
    restored, data = checkpointing.Checkpointer(tmp_path, keep=1).restore(1, state)
    np.testing.assert_array_equal(np.asarray(restored["bias"]), np.arange(16))
    assert data == {"position": 3}
