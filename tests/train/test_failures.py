"""Bad configs, mismatched checkpoints and NaN losses fail loudly and safely."""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax.train import checkpointing, export, loop

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("key, value, message", [
    ("optim.schedule", "bogus", "config.optim.schedule = 'bogus'"),
    ("optim.ema_rates", (1.5,), "config.optim.ema_rates"),
    ("optim.grad_accum_steps", 3, "must divide data.batch_size"),
    ("train.sample_sampler", "euler", "config.train.sample_sampler"),
    ("mesh.fsdp", 0, "config.mesh.fsdp"),
    ("model.dtype", "float16", "config.model.dtype = 'float16': training in float16 needs loss scaling"),
])
def test_bad_value_fails_before_anything_runs(make_config, tmp_path, key, value, message):
    config = make_config("base")
    section, field = key.split(".")
    config[section][field] = value
    with pytest.raises(config_lib.ConfigError, match=re.escape(message)):
        loop.train_and_evaluate(config, tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_a_data_order_that_cannot_be_replayed_fails_before_the_restore(base_run, monkeypatch):
    workdir, config, _ = base_run
    smaller = config.copy_and_resolve_references()
    smaller.data.shapes_train_size = config.data.shapes_train_size // 2  # a warning, then the pipeline refuses

    def no_restore(*args, **kwargs):
        raise AssertionError("the checkpoint's arrays were read before the data order was checked")

    monkeypatch.setattr(checkpointing.Checkpointer, "restore", no_restore)
    smaller.train.num_steps = 20
    with pytest.raises(config_lib.ConfigError, match="the checkpoint's input pipeline has examples_per_host="):
        loop.train_and_evaluate(smaller, workdir)


def test_a_relaxed_resume_goes_on_in_a_new_order(base_run, tmp_path, caplog):
    import logging
    import shutil

    workdir, config, _ = base_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy)
    other = config.copy_and_resolve_references()
    other.data.shapes_train_size = config.data.shapes_train_size // 2
    other.data.shuffle_buffer = 16
    other.train.strict_data_order = False
    other.train.num_steps = 13
    with caplog.at_level(logging.WARNING):
        row = loop.train_and_evaluate(other, copy)
    assert np.isfinite(row["loss"]) and checkpointing.Checkpointer(copy, keep=3).latest_step() == 13
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "config.data.shuffle_buffer changes from" in messages and "in a new order" in messages


def test_mesh_that_does_not_fit_the_devices(make_config, tmp_path):
    config = make_config("base")
    config.mesh.data, config.mesh.fsdp = 3, 2
    with pytest.raises(config_lib.ConfigError, match=r"config\.mesh \(data=3, fsdp=2, tensor=1\) needs 6 devices "
                                                     r"but 8"):
        loop.train_and_evaluate(config, tmp_path)


@pytest.mark.parametrize("override, message", [
    ("--config.train.no_such_key=1", "error: --config.train.no_such_key=1: config.train.no_such_key does not exist"),
    ("--config.data.batch_sz=1", "config.data.batch_sz does not exist (did you mean data.batch_size?)"),
    ("--config.data.batch_size=x", "config.data.batch_size is of type int ('x' is not a Python literal)"),
    ("--config.model.kind=big", "error: config.model.kind = 'big'"),
    # "=None" reaches the config (ml_collections alone would try int('None')); validation then decides.
    ("--config.data.batch_size=None", "error: config.data.batch_size = None: must be a positive integer"),
    ("--config=configs/no_such_file.py", "error: config file configs/no_such_file.py does not exist"),
    ("--config=README.md", "error: config file README.md is not a Python file (.py) with a get_config()"),
    ("--workdir=train.py", "error: --workdir train.py: exists and is not a directory"),
])
def test_cli_rejects_unknown_and_bad_keys_in_one_line(tmp_path, override, message):
    result = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/shapes_base.py", "--workdir", str(tmp_path), override],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("overrides, message", [
    # Optional keys (None by default) take overrides; a vocabulary too large for the model is one line.
    (["--config.text.tokenizer=sentencepiece", "--config.text.tokenizer_path=/nonexistent.model"],
     "error: config.text.tokenizer_path = '/nonexistent.model'"),
    (["--config.text.n_vocab=32"], "error: config.text.n_vocab = 32: the model's token embedding has 32 rows"),
])
def test_tokenizer_mistakes_are_one_line(tmp_path, overrides, message):
    workdir = tmp_path / "runs" / "new"
    result = subprocess.run(
        [sys.executable, "train.py", "--config", "configs/shapes_base.py", "--workdir", str(workdir), *overrides],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    # Refused after the checkpoint manager was made: the new workdir is not left behind as an empty run.
    assert not workdir.exists() and (tmp_path / "runs").is_dir()


def test_stop_signal_while_setting_up_saves_nothing_and_says_so(make_config, tmp_path, monkeypatch):
    """Ctrl-C during start-up (building the state, compiling) is a clean stop, not a KeyboardInterrupt."""
    restore = loop.restore_or_initialize

    def interrupted(run):
        os.kill(os.getpid(), signal.SIGINT)  # caught by the run's handler: only a flag is set
        return restore(run)

    monkeypatch.setattr(loop, "restore_or_initialize", interrupted)
    config = make_config("base")
    config.train.num_steps = 4
    with pytest.raises(loop.TrainingStopped, match="while setting up, before training from step 0") as stopped:
        loop.train_and_evaluate(config, tmp_path)
    assert stopped.value.exit_code == 130 and not stopped.value.started
    assert not (tmp_path / "checkpoints").exists()  # nothing saved: no empty folder passing for a run


def test_checkpoint_of_another_architecture_is_named(base_run):
    workdir, config, _ = base_run
    wider = config.copy_and_resolve_references()
    wider.model.model_channels = 64
    with pytest.raises(checkpointing.ArchitectureMismatch) as error:
        loop.train_and_evaluate(wider, workdir)
    text = str(error.value)
    assert "model.model_channels: checkpoint 32 -> config 64" in text
    assert re.search(r"params\.input_blocks_0_0\.kernel: checkpoint \(3, 3, 3, 32\) -> model \(3, 3, 3, 64\)", text)
    # Nothing was overwritten: the stored config still describes the checkpoint.
    assert '"model_channels": 32' in (workdir / "config.json").read_text()


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(make_config, tmp_path):
    config = make_config("base")
    config.optim.learning_rate = 1e30  # the first update sends the weights to 1e30: the next loss overflows
    config.optim.grad_clip_norm = None
    config.train.num_steps = 6
    config.train.checkpoint_every = 1
    with pytest.raises(loop.NonFiniteLossError, match=r"at step \d+") as error:
        loop.train_and_evaluate(config, tmp_path)
    bad_step = int(re.search(r"at step (\d+)", str(error.value)).group(1))
    assert bad_step >= 2
    ckpt = checkpointing.Checkpointer(tmp_path, keep=3)
    assert ckpt.latest_step() == bad_step - 1
    assert not any(p.name.startswith(str(bad_step)) for p in (tmp_path / "checkpoints").iterdir())
    # The last good checkpoint restores and holds finite weights.
    _, params = checkpoints.load_model(export.export_from_workdir(tmp_path, tmp_path / "good"))
    assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(params))


def test_a_misspelt_key_set_in_python_is_refused(make_config, tmp_path):
    config = make_config("base")
    config.train.num_step = 2
    with pytest.raises(config_lib.ConfigError, match=r"did you mean train\.num_steps\?"):
        loop.train_and_evaluate(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _damaged_copy(workdir: pathlib.Path, copy: pathlib.Path, damage: str) -> pathlib.Path:
    import shutil

    shutil.copytree(workdir, copy)
    state = copy / "checkpoints" / "12" / "state"
    if damage == "array":  # a truncated data file: the metadata reads, the arrays do not
        biggest = max((p for p in state.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
        with open(biggest, "r+b") as f:
            f.truncate(100)
    elif damage == "metadata":
        (state / "_METADATA").write_text("not json")
    elif damage == "deleted":
        shutil.rmtree(state)
    return copy


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # Orbax's abandoned reads
@pytest.mark.parametrize("damage", ["array", "metadata", "deleted"])
def test_a_damaged_checkpoint_is_named_with_the_one_to_resume_from(base_run, tmp_path, damage):
    import gc

    workdir, config, _ = base_run
    copy = _damaged_copy(workdir, tmp_path / "run", damage)
    longer = config.copy_and_resolve_references()
    longer.train.num_steps = 20
    with pytest.raises(checkpointing.UnreadableCheckpoint,
                       match=rf"checkpoint {re.escape(str(copy))}/checkpoints/12 cannot be read \(.+\); move it out "
                             rf"of {re.escape(str(copy))}/checkpoints to resume from step 6, the newest before it"):
        loop.train_and_evaluate(longer, copy)
    # Orbax abandons the other arrays' reads; collect them here, under this test's filter, rather than
    # in whichever test runs next (hundreds of warnings there).
    gc.collect()


def test_a_damaged_checkpoint_is_one_line_from_train_py(base_run, tmp_path, shapes_dir):
    """Orbax's abandoned reads of the other arrays print nothing after the error."""
    workdir, _, _ = base_run
    copy = _damaged_copy(workdir, tmp_path / "run", "array")
    config_file = tmp_path / "tiny.py"
    config_file.write_text("from tests.train.conftest import tiny_config\n\n\ndef get_config():\n"
                           f"    return tiny_config('base', {str(shapes_dir)!r})\n")
    result = subprocess.run([sys.executable, "train.py", "--config", str(config_file), "--workdir", str(copy),
                             "--config.train.num_steps=20"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: checkpoint {copy}/checkpoints/12 cannot be read")
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def test_a_damaged_config_json_says_how_to_go_on(base_run, tmp_path):
    import shutil

    workdir, config, _ = base_run
    copy = shutil.copytree(workdir, tmp_path / "run")
    (copy / "config.json").write_text('{"model": {"kind": "ba')
    with pytest.raises(config_lib.ConfigError, match=r"config.json is damaged \(.+\); delete it to resume"):
        loop.train_and_evaluate(config.copy_and_resolve_references(), copy)


def test_resuming_with_clipping_switched_and_other_ema_rates_carries_the_state_over(base_run, tmp_path, caplog):
    import logging
    import shutil

    workdir, config, _ = base_run
    copy = shutil.copytree(workdir, tmp_path / "run")
    changed = config.copy_and_resolve_references()
    changed.optim.grad_clip_norm = None  # a loss spike's usual remedy, mid-run
    changed.optim.ema_rates = (0.99, 0.5)  # reordered, one kept, one new
    changed.train.num_steps = 13
    changed.train.sample_every = None
    with caplog.at_level(logging.WARNING, logger="glide_jax"):
        row = loop.train_and_evaluate(changed, copy)
    assert np.isfinite(row["loss"])
    warnings = "\n".join(r.getMessage() for r in caplog.records)
    assert "config.optim.grad_clip_norm: checkpoint 1.0 -> config None: the optimizer state carries over" in warnings
    assert "the EMA of rate 0.5 starts from the parameters at this step" in warnings
    ckpt = checkpointing.Checkpointer(copy, keep=3)
    try:
        target = loop.build_run(loop.prepare_config(changed.copy_and_resolve_references()), copy).abstract_state
        state, _ = ckpt.restore(13, target)
    finally:
        ckpt.close()
    # The EMA at 0.99 went on from the checkpoint's; the one at 0.5 followed the fresh parameters closely.
    old = checkpoints.load_model(export.export_from_workdir(workdir, tmp_path / "old99", ema_rate=0.99))[1]
    leaves = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])  # noqa: E731
    params, ema99, ema05 = (leaves(t) for t in (state.params, state.ema_params[0], state.ema_params[1]))
    assert np.abs(ema99 - leaves(old)).max() < np.abs(params - leaves(old)).max()
    assert np.abs(ema05 - params).max() < np.abs(ema99 - params).max()


def test_an_optimizer_state_that_does_not_fit_says_so(base_run, tmp_path):
    import shutil

    workdir, config, _ = base_run
    copy = shutil.copytree(workdir, tmp_path / "run")
    (copy / "config.json").unlink()  # nothing says what the checkpoint's optimizer was
    changed = config.copy_and_resolve_references()
    changed.optim.grad_clip_norm = None
    changed.train.num_steps = 20
    with pytest.raises(checkpointing.ArchitectureMismatch, match=r"holds optimizer and EMA state that does not fit "
                                                                 r"the configured optimizer \(\d+ array\(s\) differ\)"):
        loop.train_and_evaluate(changed, copy)


def test_a_changed_batch_size_names_the_config_key(base_run):
    workdir, config, _ = base_run
    bigger = config.copy_and_resolve_references()
    bigger.data.batch_size = 16
    bigger.train.num_steps = 20
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.batch_size = 16, but the checkpoint's run used 8"):
        loop.train_and_evaluate(bigger, workdir)
