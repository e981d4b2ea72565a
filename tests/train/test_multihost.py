"""train.py across two processes (jax.distributed on CPU, 2 devices each).

The two processes form one 4-device mesh (data=2 x fsdp=2, so parameters
and optimizer state are split across the hosts). They must build the
dataset once, agree on every step, write one metrics log, save one
checkpoint that a single process with another mesh restores, evaluate
the held-out loss together, and export that checkpoint's EMA (gathered
from both processes).
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from glide_jax import checkpoints
from glide_jax.models import factory
from glide_jax import sharding
from glide_jax.train import checkpointing, metrics, optim
from glide_jax.train import state as state_lib

REPO = pathlib.Path(__file__).resolve().parents[2]
PROCESSES = 2
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_on_two_hosts(config_dir: pathlib.Path, workdir: pathlib.Path, logs: pathlib.Path) -> list[int]:
    config_file = logs / "config.py"
    # load_config's typed None fields take the --config.train.* overrides below.
    config_file.write_text("from glide_jax import checkpoints\n\n\ndef get_config():\n"
                           f"    return checkpoints.load_config({str(config_dir)!r})\n")
    # Two devices per process; the session's other XLA flags (tests/conftest.py) carry over.
    flags = [f for f in os.environ["XLA_FLAGS"].split() if not f.startswith("--xla_force_host_platform_device_count")]
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(flags + ["--xla_force_host_platform_device_count=2"]))
    address = f"localhost:{_free_port()}"
    children = []
    for process_id in range(PROCESSES):
        log = open(logs / f"process_{process_id}.log", "w")  # noqa: SIM115 (closed below)
        command = [sys.executable, str(REPO / "train.py"), f"--config={config_file}", f"--workdir={workdir}",
                   f"--config.train.coordinator_address={address}",
                   f"--config.train.num_processes={PROCESSES}", f"--config.train.process_id={process_id}"]
        children.append((subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT), log))
    codes = []
    try:
        for child, log in children:
            codes.append(child.wait(timeout=900))
            log.close()
    finally:
        for child, _ in children:
            if child.poll() is None:
                child.kill()
    return codes


def test_two_process_run_trains_checkpoints_and_exports_once(make_config, tmp_path):
    config = make_config("base")
    config.mesh.fsdp = 2
    config.train.num_steps = STEPS
    config.train.checkpoint_every = STEPS
    config.train.sample_every = None  # grids gather like the export does; skipping them saves a compile
    config.train.eval_every = STEPS  # the held-out loss: each host evaluates its share of the batches
    config.train.eval_batches = 1
    config.data.data_dir = str(tmp_path / "tfds")  # unbuilt: process 0 builds it, process 1 waits
    config_dir = tmp_path / "config"
    checkpointing.write_config(config_dir, config)
    workdir = tmp_path / "run"

    codes = _train_on_two_hosts(config_dir, workdir, tmp_path)
    logs = {p.name: p.read_text()[-3000:] for p in tmp_path.glob("process_*.log")}
    assert codes == [0] * PROCESSES, logs

    rows = metrics.read_metrics(workdir)
    assert [row["step"] for row in rows if "loss" in row] == list(range(1, STEPS + 1))
    evaluations = [row for row in rows if "eval/loss" in row]  # written once, by process 0
    assert [row["step"] for row in evaluations] == [STEPS]
    assert all(np.isfinite(evaluations[0][k]) for k in ("eval/loss", "eval_ema/loss", "eval/mse"))
    assert checkpointing.Checkpointer(workdir, keep=3).latest_step() == STEPS

    # This process has 8 devices and another mesh (data=8): the checkpoint must still restore.
    restore_config = config.copy_and_resolve_references()
    restore_config.mesh.fsdp = 1
    mesh = sharding.create_mesh(restore_config.mesh)
    _, abstract = state_lib.abstract_train_state(restore_config, factory.create_model(restore_config),
                                                 optim.create_optimizer(restore_config),
                                                 factory.example_inputs(restore_config, 1), mesh)
    ckpt = checkpointing.Checkpointer(workdir, keep=3)
    state, _ = ckpt.restore(STEPS, abstract)
    ckpt.close()
    state = jax.device_get(state)
    assert int(state.step) == STEPS

    _, exported = checkpoints.load_model(workdir / "export")
    restored = jax.tree_util.tree_leaves_with_path(state.ema_params[0])
    assert len(restored) == len(jax.tree_util.tree_leaves(exported))
    for (path, a), b in zip(restored, jax.tree_util.tree_leaves(exported)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state.params))
