"""A run killed with SIGKILL after its step-3 checkpoint resumes bit for bit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np

from glide_jax.models import factory
from glide_jax import sharding
from glide_jax.train import checkpointing, loop, metrics, optim
from glide_jax.train import state as state_lib

# Runs train_and_evaluate in a fresh process, under the session's XLA_FLAGS and
# JAX_PLATFORMS (inherited: tests/conftest.py set them), so that it compiles
# what this process compiles, bit for bit. With "hold_at_3" it says so once
# checkpoint 3 is fully written and waits there, for the test to SIGKILL it.
CHILD = textwrap.dedent("""
    import sys, time
    import jax
    jax.config.update("jax_default_matmul_precision", "highest")
    jax.config.update("jax_compilation_cache_dir", sys.argv[3])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from glide_jax import checkpoints
    from glide_jax.train import checkpointing, loop

    save = checkpointing.Checkpointer.save

    def save_then_hold(self, step, state, data_state):
        save(self, step, state, data_state)
        if step == 3:
            self.wait()
            print("CHECKPOINT 3 WRITTEN", flush=True)
            time.sleep(600)

    if sys.argv[4] == "hold_at_3":
        checkpointing.Checkpointer.save = save_then_hold
    try:
        loop.train_and_evaluate(checkpoints.load_config(sys.argv[1]), sys.argv[2])
    except loop.TrainingStopped as stopped:  # as train.py does
        print(stopped, flush=True)
        sys.exit(stopped.exit_code)
""")


def _start_child(config_dir, workdir, cache_dir, mode, stdout):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-c", CHILD, str(config_dir), str(workdir), str(cache_dir), mode],
                            stdout=stdout, stderr=subprocess.DEVNULL, text=True, env=env)


def _kill_after_checkpoint_3(config_dir, workdir, cache_dir, timeout=900):
    child = _start_child(config_dir, workdir, cache_dir, "hold_at_3", subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        for line in child.stdout:
            if "CHECKPOINT 3 WRITTEN" in line:
                break
            assert time.time() < deadline, "child never wrote checkpoint 3"
        else:
            raise AssertionError(f"child exited with {child.wait()} before checkpoint 3")
        os.kill(child.pid, signal.SIGKILL)
    finally:
        returncode = child.wait()
    return returncode


def _restore(config, workdir, step):
    model = factory.create_model(config)
    mesh = sharding.create_mesh(config.mesh)
    _, abstract = state_lib.abstract_train_state(config, model, optim.create_optimizer(config),
                                                 factory.example_inputs(config, 1), mesh)
    ckpt = checkpointing.Checkpointer(workdir, keep=3)
    state, data_state = ckpt.restore(step, abstract)
    ckpt.close()
    return jax.device_get(state), data_state


def test_sigkill_then_resume_is_bit_exact(make_config, tmp_path, compilation_cache):
    config = make_config("base")
    config.train.num_steps = 6
    config.train.checkpoint_every = 3
    config_dir = tmp_path / "config"
    checkpointing.write_config(config_dir, config)

    loop.train_and_evaluate(config.copy_and_resolve_references(), tmp_path / "straight")

    killed = tmp_path / "killed"
    assert _kill_after_checkpoint_3(config_dir, killed, compilation_cache) == -signal.SIGKILL
    assert checkpointing.Checkpointer(killed, keep=3).latest_step() == 3
    loop.train_and_evaluate(config.copy_and_resolve_references(), killed)

    steps = [row["step"] for row in metrics.read_metrics(killed)]
    assert steps == [1, 2, 3, 4, 5, 6], "the resumed run must continue at step 4, not start over"
    straight_state, straight_data = _restore(config, tmp_path / "straight", 6)
    resumed_state, resumed_data = _restore(config, killed, 6)
    assert straight_data == resumed_data and straight_data["batches"] == 6
    pairs = zip(jax.tree_util.tree_leaves_with_path(straight_state), jax.tree_util.tree_leaves(resumed_state))
    for (path, a), b in pairs:
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    # Training did move the state, so equality is not vacuous.
    assert int(resumed_state.step) == 6
    assert not np.array_equal(jax.tree_util.tree_leaves(resumed_state.params)[0],
                              jax.tree_util.tree_leaves(resumed_state.ema_params[1])[0])


def test_sigterm_saves_and_exits_143(make_config, tmp_path, compilation_cache):
    config = make_config("base")
    config.train.num_steps = 10_000  # far more than it will run: SIGTERM ends it
    config.train.checkpoint_every = 10_000
    config_dir = tmp_path / "config"
    checkpointing.write_config(config_dir, config)
    workdir = tmp_path / "run"
    child = _start_child(config_dir, workdir, compilation_cache, "plain", subprocess.PIPE)
    try:
        deadline = time.time() + 900
        while not ((workdir / "metrics.jsonl").exists() and len(metrics.read_metrics(workdir)) >= 2):
            assert child.poll() is None and time.time() < deadline, "child never trained"
            time.sleep(0.5)
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=600)
        # Saved and resumable, but not finished: 128 + SIGTERM, as train.py exits.
        assert child.returncode == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
    last_logged = metrics.read_metrics(workdir)[-1]["step"]
    saved = checkpointing.Checkpointer(workdir, keep=3).latest_step()
    assert saved is not None and 2 <= saved < 10_000 and saved == last_logged
    assert f"stopped by SIGTERM after saving step {saved}; run the same command to resume" in out
    assert (workdir / "export" / "params.npz").is_file()
