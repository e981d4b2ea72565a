"""End-to-end runs of train_and_evaluate: learning, outputs, every model kind."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax.train import checkpointing, export, loop, metrics


def test_loss_falls_on_glide_shapes(base_run):
    workdir, _, _ = base_run
    rows = metrics.read_metrics(workdir)
    assert [r["step"] for r in rows] == list(range(1, 13))
    mse = np.array([r["mse"] for r in rows])
    assert np.all(np.isfinite(mse))
    assert mse[-4:].mean() < 0.7 * mse[:4].mean(), mse
    # Per-quarter losses are means over the examples that fell in the quarter; none made up.
    quarters = [r[f"loss_q{q}"] for r in rows for q in range(4) if f"loss_q{q}" in r]
    assert quarters and all(np.isfinite(quarters)) and min(quarters) > 0
    assert not any(key.endswith(("_sum", "_count")) for r in rows for key in r)


def test_quarter_sums_become_means_and_empty_quarters_are_left_out():
    mean = {"loss": 1.0, "loss_q0_sum": 3.0, "loss_q0_count": 2.0, "loss_q1_sum": 0.0, "loss_q1_count": 0.0}
    assert metrics.ratio_metrics(mean) == {"loss": 1.0, "loss_q0": 1.5}


def test_a_resumed_run_drops_the_rows_it_logs_again(tmp_path):
    # Crashed after logging step 5 with its last checkpoint at 3 (and a half-written line).
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    writer = metrics.MetricsWriter(tmp_path, num_steps=10, start_step=3, batch_size=2, progress_bar=False)
    writer.write(4, {"loss": 0.5})
    writer.close()
    assert [(r["step"], r["loss"]) for r in metrics.read_metrics(tmp_path)] == [(1, 1.0), (2, 0.5), (3, 1 / 3),
                                                                               (4, 0.5)]
    assert not (tmp_path / "metrics.jsonl.tmp").exists()


def test_rates_leave_out_the_compiling_first_step_and_rows_are_logged_without_a_bar(tmp_path, caplog):
    import logging

    writer = metrics.MetricsWriter(tmp_path, num_steps=10, start_step=0, batch_size=2, progress_bar=False)
    writer.step_done(1)
    with caplog.at_level(logging.INFO, logger="glide_jax.train.metrics"):
        first = writer.write(1, {"loss": 0.5})  # step 1 (compiling) may not be finished: no rate
        for step in (2, 3):
            writer.step_done(step)  # step 2 under way: step 1 finished, the clock starts
        third = writer.write(3, {"loss": 0.25})
    writer.close()
    assert "steps_per_sec" not in first and third["images_per_sec"] == 2 * third["steps_per_sec"] > 0
    assert [r.getMessage().split(",")[0] for r in caplog.records] == ["step 1: loss 0.5", "step 3: loss 0.25"]


def test_log_records_are_printed_above_the_bar_not_into_it(tmp_path, capsys):
    import logging
    import sys

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    root.addHandler(console)
    try:
        writer = metrics.MetricsWriter(tmp_path, num_steps=10, start_step=0, batch_size=2, progress_bar=True)
        writer.step_done(1)
        logging.getLogger("glide_jax.data.preprocess").warning("a caption was cut")
        writer.close()
        assert console in root.handlers  # given back when the bar closes
    finally:
        root.removeHandler(console)
    err = capsys.readouterr().err
    assert "a caption was cut" in err
    assert "]a caption was cut" not in err, err  # not glued to the bar's "[00:00<?, ?step/s]"


def test_run_writes_checkpoints_exports_and_grid(base_run):
    workdir, config, row = base_run
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "6"]
    assert json.loads((workdir / "config.json").read_text())["model"]["kind"] == "base"
    assert (workdir / "samples" / "step_00000012.png").is_file()
    assert any((workdir / "tensorboard").iterdir())
    assert row["images_per_sec"] > 0 and np.isfinite(row["loss"])
    exported_config, params = checkpoints.load_model(workdir / "export")
    assert exported_config.model.model_channels == config.model.model_channels
    # The loop's export is the first EMA rate of the final checkpoint.
    out = export.export_from_workdir(workdir, workdir / "export_ema2", ema_rate=config.optim.ema_rates[1])
    _, params_second = checkpoints.load_model(out)
    _, raw = checkpoints.load_model(export.export_from_workdir(workdir, workdir / "export_raw", ema_rate=0))
    assert export.main(["--workdir", str(workdir), "--output", str(workdir / "export_first")]) == 0
    _, first = checkpoints.load_model(workdir / "export_first")
    flat = lambda tree: np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(tree)])  # noqa: E731
    np.testing.assert_array_equal(flat(params), flat(first))
    assert not np.array_equal(flat(params), flat(params_second))
    assert not np.array_equal(flat(params), flat(raw))
    origin = lambda rate: {"workdir": str(workdir.absolute()), "step": 12, "ema_rate": rate}  # noqa: E731
    assert checkpoints.load_origin(workdir / "export") == origin(config.optim.ema_rates[0])
    assert checkpoints.load_origin(workdir / "export_ema2") == origin(config.optim.ema_rates[1])
    assert checkpoints.load_origin(workdir / "export_raw") == origin(0.0)
    checkpoints.save_model(workdir / "export_raw", config, raw)  # a model of another source: no origin
    assert checkpoints.load_origin(workdir / "export_raw") is None


def test_export_never_overwrites_a_run_or_another_model(base_run, tmp_path, capsys):
    workdir, config, _ = base_run
    out = tmp_path / "out"
    for _ in range(2):  # re-exporting the same network replaces the earlier export
        assert export.main(["--workdir", str(workdir), "--output", str(out), "--step", "6"]) == 0
    other = config.copy_and_resolve_references()
    other.model.kind = "inpaint"
    checkpoints.save_model(tmp_path / "inpaint", other, {"w": np.zeros(1)})
    assert export.main(["--workdir", str(workdir), "--output", str(tmp_path / "inpaint")]) == 2
    assert "already holds a 'inpaint' model of another configuration; choose another --output, or pass --force" \
        in capsys.readouterr().err
    assert export.main(["--workdir", str(workdir), "--output", str(tmp_path / "inpaint"), "--force"]) == 0
    assert checkpoints.load_config(tmp_path / "inpaint").model.kind == "base"
    run_copy = tmp_path / "run_copy"
    (run_copy / "checkpoints").mkdir(parents=True)
    for flags in ([], ["--force"]):  # a training workdir's config.json is never replaced
        assert export.main(["--workdir", str(workdir), "--output", str(run_copy), *flags]) == 2
        assert "is a training workdir (it holds checkpoints/)" in capsys.readouterr().err
    # Nor inside its checkpoints, where rotation would delete the export with a step.
    for inside in (workdir / "checkpoints" / "6", workdir / "checkpoints" / "mine"):
        assert export.main(["--workdir", str(workdir), "--output", str(inside), "--force"]) == 2
        assert f"is inside the checkpoints of the training workdir {workdir}" in capsys.readouterr().err
    assert not (workdir / "checkpoints" / "mine").exists() and not (workdir / "checkpoints" / "6" / "params.npz").exists()
    assert export.main(["--workdir", str(tmp_path / "inpaint"), "--output", str(tmp_path / "x")]) == 2
    assert "is not a training workdir (no checkpoints/ in it)" in capsys.readouterr().err


def test_export_reads_only_the_exported_tree(base_run):
    import orbax.checkpoint as ocp

    from glide_jax import sharding as sharding_lib
    from glide_jax.models import factory
    from glide_jax.train import optim
    from glide_jax.train import state as state_lib

    workdir, config, _ = base_run
    local = config.copy_and_resolve_references()
    local.mesh.data, local.mesh.fsdp, local.mesh.tensor = 1, 1, 1
    mesh = sharding_lib.create_mesh(local.mesh, jax.devices("cpu")[:1])
    _, abstract = state_lib.abstract_train_state(local, factory.create_model(local), optim.create_optimizer(local),
                                                 factory.example_inputs(local, 1), mesh)
    rates = config.optim.ema_rates
    ckpt = checkpointing.Checkpointer(workdir, keep=3)
    try:
        part = ckpt.restore_part(12, export._pick(abstract, rates, rates[1], placeholder=ocp.PLACEHOLDER))
        full, data_state = ckpt.restore(12, abstract)
        assert ckpt.data_state(12) == data_state
    finally:
        ckpt.close()
    # The second EMA tree is read, equal to a full restore's; the params, moments and first EMA are not.
    for got, want in zip(jax.tree_util.tree_leaves(part.ema_params[1]), jax.tree_util.tree_leaves(full.ema_params[1])):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert all(leaf is ocp.PLACEHOLDER for leaf in jax.tree_util.tree_leaves((part.params, part.opt_state,
                                                                              part.ema_params[0])))


def test_export_tool_names_what_is_wrong(base_run, tmp_path, capsys):
    workdir, _, _ = base_run
    assert export.main(["--workdir", str(workdir), "--output", str(tmp_path / "a"), "--step", "7"]) == 2
    err = capsys.readouterr().err
    assert "--step 7: no such checkpoint" in err and "it holds steps 6, 12" in err
    assert export.main(["--workdir", str(workdir), "--output", str(tmp_path / "b"), "--ema-rate", "0.5"]) == 2
    assert "--ema-rate 0.5: the run tracks config.optim.ema_rates" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_rerun_of_finished_workdir_does_nothing(base_run):
    workdir, config, _ = base_run
    assert loop.train_and_evaluate(config.copy_and_resolve_references(), workdir) == {}
    assert checkpointing.Checkpointer(workdir, keep=3).latest_step() == 12


def _train_two_steps(config, workdir) -> dict:
    """Trains `config` for two steps in `workdir`; checks the checkpoint and the export."""
    config.train.num_steps = 2
    config.train.checkpoint_every = 2
    row = loop.train_and_evaluate(config, workdir)
    assert np.isfinite(row["loss"])
    exported_config, params = checkpoints.load_model(workdir / "export")
    assert exported_config.model.kind == config.model.kind
    assert params, "export holds no parameters"
    assert checkpointing.Checkpointer(workdir, keep=3).latest_step() == 2
    return row


@pytest.mark.parametrize("kind", ["upsample", "upsample_inpaint", "clip"])
def test_every_kind_trains_and_checkpoint_loads(kind, make_config, tmp_path):
    row = _train_two_steps(make_config(kind), tmp_path)
    if kind == "clip":
        assert 0.0 <= row["accuracy"] <= 1.0 and row["temperature"] == pytest.approx(100.0, rel=0.05)


def test_inpaint_fine_tunes_from_the_base_run(make_config, tmp_path, base_run, caplog):
    config = make_config("inpaint")
    config.train.init_from = str(base_run[0])  # GLIDE §4.3: fine-tune the text-to-image model
    config.text.xf_heads = 4  # same shapes, but the copied attention weights were learned for 2 heads
    with caplog.at_level("WARNING", logger="glide_jax.train.loop"):
        _train_two_steps(config, tmp_path)
    assert "config.text.xf_heads = 4, the source model's is 2" in caplog.text


def test_evaluation_rows_are_held_out_losses_that_compare(base_run, tmp_path):
    import shutil

    from glide_jax.data import create_input_pipeline

    workdir, config, _ = base_run
    copy = shutil.copytree(workdir, tmp_path / "run")
    longer = config.copy_and_resolve_references()
    longer.train.num_steps = 14
    longer.train.sample_every = None
    longer.train.eval_every = 1
    longer.train.eval_batches = 2
    loop.train_and_evaluate(longer, copy)
    rows = [r for r in metrics.read_metrics(copy) if "eval/loss" in r]
    assert [r["step"] for r in rows] == [13, 14]
    assert all(np.isfinite(r["eval/loss"]) and np.isfinite(r["eval_ema/loss"]) and "eval/mse" in r for r in rows)
    # The same parameters give the same value: fixed batches, timesteps and noise.
    run = loop.build_run(loop.prepare_config(longer.copy_and_resolve_references()), copy)
    try:
        state, _ = run.checkpointer.restore(14, run.abstract_state)
        evaluate = loop.Evaluator(run, create_input_pipeline, loop.batch_axes(run.config))
        assert evaluate(state) == evaluate(state)
        assert evaluate(state)["eval/loss"] == rows[-1]["eval/loss"]
    finally:
        run.checkpointer.close()


def test_a_missing_evaluation_split_is_named(make_config, tmp_path):
    config = make_config("base")
    config.train.eval_every = 2
    config.train.eval_split = "test"
    with pytest.raises(config_lib.ConfigError, match=r"config\.train\.eval_split = 'test': split 'test' not in"):
        loop.train_and_evaluate(config, tmp_path)
