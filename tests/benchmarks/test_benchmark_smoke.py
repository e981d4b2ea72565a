"""The speed benchmarks run end to end in --smoke mode and write complete JSON.

Each script's `main` runs in-process on the first CPU device with a tiny
model, so a change to the sampling stages, the models or the train step
that breaks a benchmark fails here instead of on the next GPU run.
"""

import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import jax
import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
METADATA = ("date", "device_kind", "platform", "num_devices", "jax", "jaxlib", "flax", "python", "commit",
            "dirty", "xla_flags")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(name: str, tmp_path_factory, *args) -> dict:
    out = tmp_path_factory.mktemp(name) / "result.json"
    assert _load(name).main(["--smoke", "--out", str(out), *args]) == 0
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def sample_result(tmp_path_factory):
    return _run("sample_speed", tmp_path_factory)


@pytest.fixture(scope="module")
def train_result(tmp_path_factory):
    return _run("train_speed", tmp_path_factory)


def _check_timing(row: dict, repeats: int) -> None:
    assert len(row["times_s"]) == repeats and len(row["warmup_s"]) == 1
    assert row["min_s"] <= row["median_s"] <= row["max_s"]
    assert row["compile_s"] > 0


def test_sample_speed_smoke(sample_result):
    r = sample_result
    assert r["benchmark"] == "sample_speed" and r["smoke"] is True
    assert all(r[key] is not None for key in METADATA if key != "dirty")
    assert len(r["commit"]) == 40 and r["device_kind"] == "cpu"
    assert r["settings"]["dtype"] == "bfloat16" and r["settings"]["batch_sizes"] == [2]
    assert r["settings"]["attention_impl"] == "auto" and r["settings"]["attention"] == "xla"  # no CUDA here
    rows = {row["workload"]: row for row in r["results"]}
    assert set(rows) == {"base", "upsample"}
    base, up = rows["base"], rows["upsample"]
    # CFG doubles the model rows; the base loop is the smoke's short respacing.
    assert (base["model_rows"], base["steps"], base["sampler"], base["guidance_scale"]) == (4, 10, "ddpm", 3.0)
    assert (up["model_rows"], up["steps"], up["sampler"], up["respacing"]) == (2, 27, "ddim", "fast27")
    for row in (base, up):
        _check_timing(row, 2)
        assert row["finite"] is True
        assert row["output_shape"] == [2, 16, 16, 3]
        assert row["images_per_s"] == pytest.approx(2 / row["median_s"], rel=1e-3)
        # steps U-Net calls plus one text encoding, as counted from the jaxprs.
        assert row["batch_flops"] == row["steps"] * row["unet_call_flops"] + row["text_encoder_flops"]
        assert row["unet_call_flops"] > row["text_encoder_flops"] > 0
        assert row["compute_floor_s"] == pytest.approx(row["batch_flops"] / 790e12)
        assert row["memory"]["peak_bytes"] > 0
        # The reverse loop carries at least x_t (float32) and the parameters it closes over.
        assert row["loop_state"]["bytes_by_dtype"]["f32"] >= row["model_rows"] * 16 * 16 * 3 * 4
        assert row["loop_state"]["total_bytes"] == sum(row["loop_state"]["bytes_by_dtype"].values())
        # The compiled program's kernels do the jaxpr's FLOPs (XLA folds a
        # few tiny dots into multiplies), the loop's trip count times over.
        kernels = row["kernel_model"]
        assert kernels["program"]["flops"] == pytest.approx(row["batch_flops"], rel=0.01)
        assert kernels["step"]["trips"] == row["steps"] and kernels["step"]["kernels"] > 10
        assert kernels["program"]["predicted_s"] > kernels["step"]["predicted_s"] * row["steps"] * 0.99


def test_train_speed_smoke(train_result):
    r = train_result
    assert r["benchmark"] == "train_speed" and r["smoke"] is True
    assert all(r[key] is not None for key in METADATA if key != "dirty")
    step = r["train_step"]
    _check_timing(step, 2)
    assert step["batch_size"] == 4 and step["dtype"] == "bfloat16" and r["settings"]["devices"] == 1
    assert step["finite"] is True and math.isfinite(step["loss"])
    assert step["images_per_s"] == pytest.approx(4 / step["median_s"], rel=1e-3)
    # The jaxpr count (matmuls + convolutions) is close to XLA's, which adds
    # elementwise work and leaves out the zero-padding taps of convolutions.
    assert step["model_flops_per_step"] == pytest.approx(step["xla_lowered"]["flops"], rel=0.25)
    assert step["xla_compiled"]["flops"] > 0
    peak = r["matmul_peak"]
    assert peak["size"] == 256 and peak["tflops"] > 0
    achieved = step["model_flops_per_step"] / step["median_s"] / 1e12
    assert step["mfu"] == pytest.approx(achieved / peak["tflops"], rel=0.01)
    assert step["memory"]["peak_bytes"] > step["memory"]["compiled"]["argument_size_in_bytes"] > 0
    # The step's kernels do the forward and backward matmuls and convolutions.
    assert step["kernel_model"]["program"]["flops"] == pytest.approx(step["executed_flops_per_step"], rel=0.05)


def test_results_are_complete_and_kept_row_by_row(sample_result, train_result, tmp_path, monkeypatch):
    assert sample_result["partial"] is False and train_result["partial"] is False
    # A failing analysis after a timing costs its field, not the run: the
    # timings are written, and the failure is recorded in the row.
    sample_speed = _load("sample_speed")

    def broken(compiled):
        raise ValueError("an HLO line the parser has never seen")

    monkeypatch.setattr(sample_speed.hlo_kernels, "report", broken)
    out = tmp_path / "sample.json"
    assert sample_speed.main(["--smoke", "--workloads", "base", "--out", str(out)]) == 0
    row = json.loads(out.read_text())["results"][0]
    assert row["kernel_model"] == {"error": "ValueError: an HLO line the parser has never seen"}
    assert row["s_per_batch"] > 0 and row["finite"] is True


def test_full_size_runs_refuse_a_cpu_backend(tmp_path, capsys):
    # jax falls back to the CPU when its GPU plugin fails: stop at once, write nothing.
    for name in ("sample_speed", "train_speed", "layer_speed"):
        out = tmp_path / f"{name}.json"
        assert _load(name).main(["--out", str(out)]) == 2
        assert not out.exists()
        assert "error: jax's backend is 'cpu'" in capsys.readouterr().err


def test_report_tabulates_the_smoke_results(sample_result, train_result, tmp_path):
    from benchmarks import report
    paths = []
    for name, result in (("sample_speed.json", sample_result), ("train_speed.json", train_result)):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(result))
    with pytest.raises(report.ReportError, match="a --smoke run"):
        report.load_rows(paths)
    rows = report.load_rows(paths, allow_smoke=True)
    assert [row.key for row in rows] == [("base", 2), ("train", 4), ("upsample", 2)]
    assert len({row.variant for row in rows}) == 1  # the same settings (the tests' XLA_FLAGS, if any)
    table = report.prediction_table(rows)
    for row in rows:  # every smoke program has a kernel-model prediction to set beside its time
        predicted = row.result["kernel_model"]["program"]["predicted_s"]
        assert f"| {row.seconds:.4g} s | {predicted:.4g} s |" in table


def test_layer_speed_smoke(tmp_path_factory):
    r = _run("layer_speed", tmp_path_factory)
    assert r["benchmark"] == "layer_speed" and all(r[key] is not None for key in METADATA if key != "dirty")
    norms = [row for row in r["results"] if row["case"] == "groupnorm_silu"]
    assert {(row["variant"], row["direction"]) for row in norms} == {
        (variant, direction) for variant in ("one_pass", "two_pass", "straightforward") for direction in ("forward", "forward+backward")}
    for row in norms:
        _check_timing(row, 2)
        assert row["finite"] is True
        assert row["effective_gb_per_s"] == pytest.approx(row["least_bytes"] / row["median_s"] / 1e9, rel=1e-3)
    attention = {row["variant"]: row for row in r["results"] if row["case"] == "attention"}
    _check_timing(attention["xla"], 2)
    assert attention["xla"]["achieved_tflops"] > 0
    assert "not a CUDA GPU" in attention["cudnn"]["skipped"]  # says why, on a CPU


def test_layer_speed_variants_agree():
    # The "before" GroupNorm the benchmark times against computes the same function.
    layer_speed = _load("layer_speed")
    import jax.numpy as jnp
    import numpy as np

    x = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 4, 64)) * 2 + 1
    params = {"scale": jnp.linspace(0.5, 1.5, 64), "bias": jnp.linspace(-0.2, 0.2, 64)}
    variants = layer_speed._norm_variants(jnp.float32)
    for ours in ("one_pass", "two_pass"):
        np.testing.assert_allclose(variants[ours](params, x), variants["straightforward"](params, x), atol=2e-5)


def test_benchmarks_import_no_tensorflow():
    code = ("import sys; sys.path.insert(0, 'benchmarks'); "
            "import sample_speed, train_speed, layer_speed, aot_compile; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_flop_count_smoke(tmp_path_factory):
    r = _run("flop_count", tmp_path_factory, "--batch-sizes", "1", "2", "--train-batch", "2")
    assert r["benchmark"] == "flop_count" and r["params"]["base"] > 0
    calls = {(c["model"], c["rows"]): c for c in r["model_calls"]}
    assert set(calls) == {("base", 2), ("base", 4), ("upsample", 1), ("upsample", 2)}
    for call in calls.values():
        unet = call["unet_call"]
        # The jaxpr count is close to XLA's (see test_train_speed_smoke).
        assert unet["model_flops"] == pytest.approx(unet["xla_lowered"]["flops"], rel=0.25)
    # FLOPs scale with the rows: per image, batch 1 and batch 2 cost the same.
    assert calls[("base", 4)]["unet_call"]["model_flops"] == 2 * calls[("base", 2)]["unet_call"]["model_flops"]
    work = {w["workload"]: w for w in r["workloads"]}
    base1 = work["base sampling, 100 steps + CFG, batch 1"]
    assert base1["model_flops"] == (100 * calls[("base", 2)]["unet_call"]["model_flops"]
                                    + calls[("base", 2)]["text_encoder"]["model_flops"])
    assert work["upsampler fast27, batch 2"]["steps"] == 27
    # A training step is a forward and a backward (about twice the forward)
    # over 2 images: between 2x and 4x the forward of those rows.
    forward = calls[("base", 2)]["unet_call"]["model_flops"] + calls[("base", 2)]["text_encoder"]["model_flops"]
    train = work["base training step, batch 2"]["model_flops"]
    assert 2 * forward < train < 4 * forward


def test_train_flops_do_not_credit_rematerialisation():
    train_speed = _load("train_speed")  # also puts the repository root on sys.path
    from glide_jax import sharding as sharding_lib
    from glide_jax.models import factory
    from glide_jax.train import optim
    from glide_jax.train import state as state_lib

    config = train_speed.train_config(smoke=True, dtype="float32", batch_size=2, remat=True)
    mesh = sharding_lib.create_mesh(config.mesh, jax.devices()[:1])
    model = factory.create_model(config)
    _, state = state_lib.abstract_train_state(config, model, optim.create_optimizer(config),
                                              factory.example_inputs(config, 1), mesh)
    batch = train_speed.synthetic_batch(config, 2, 0)
    flops = train_speed.step_flops(config, state, batch, jax.random.PRNGKey(0))
    # remat recomputes the residual blocks' forward in the backward pass.
    assert flops["executed_flops_per_step"] > 1.05 * flops["model_flops_per_step"] > 0


def test_aot_compile_smoke_on_cpu(tmp_path_factory):
    # The train row compiles an experiment file's model (the --config path).
    r = _run("aot_compile", tmp_path_factory, "--platform", "cpu", "--devices", "2",
             "--workloads", "sample_base", "train", "--config", str(REPO / "configs" / "shapes_base.py"))
    assert r["benchmark"] == "aot_compile" and r["device_kind"] == "cpu" and r["num_devices"] == 2
    assert all(r[key] is not None for key in METADATA if key != "dirty")
    sample, train = r["results"]
    assert (sample["workload"], sample["batch_size"], sample["devices"]) == ("sample_base", 2, 1)
    assert (train["workload"], train["devices"], train["mesh"]) == ("train", 2, {"data": 2, "fsdp": 1, "tensor": 1})
    assert train["config"].endswith("shapes_base.py") and train["batch_size"] == 2
    for row in (sample, train):
        memory = row["memory"]
        assert memory["peak_estimate_bytes"] == (memory["argument_size_in_bytes"] + memory["output_size_in_bytes"]
                                                 + memory["temp_size_in_bytes"] - memory["alias_size_in_bytes"])
        assert memory["argument_size_in_bytes"] > 0 and row["fusions"] > 0 and row["compile_s"] > 0
    # The reverse loop carries x_t and the kernels; the train step donates its state.
    assert sample["loop_state"]["bytes_by_dtype"]["f32"] >= 4 * 16 * 16 * 3 * 4
    assert train["loop_state"] is None
    assert sample["kernels"]["step"]["trips"] == 10
    assert train["kernels"]["by_kind"]["convolution"]["flops"] > 0
    assert train["memory"]["alias_size_in_bytes"] > 0.9 * train["memory"]["argument_size_in_bytes"]


def test_aot_compile_for_cuda_without_the_plugin_says_what_to_install():
    from jax._src.lib import cuda_versions
    if cuda_versions is not None:
        pytest.skip("jax's CUDA plugin is installed here")
    module = _load("aot_compile")
    with pytest.raises(SystemExit, match=r"needs jax's CUDA plugin \(pip install 'jax\[cuda12\]'\)"):
        module.main(["--smoke", "--platform", "cuda"])


@pytest.mark.parametrize("name", ["shapes_base", "shapes_inpaint", "shapes_upsample", "shapes_clip"])
def test_synthetic_batch_has_every_kinds_inputs(name):
    # `aot_compile.py --config` takes any experiment file (configs/paper_upsample.py, say).
    train_speed = _load("train_speed")
    from glide_jax import config as config_lib
    from glide_jax import sharding as sharding_lib
    from glide_jax.diffusion import diffusion_from_config
    from glide_jax.models import factory
    from glide_jax.train import losses, optim
    from glide_jax.train import state as state_lib

    config = config_lib.load_config_file(str(REPO / "configs" / f"{name}.py"))
    mesh = sharding_lib.create_mesh(config.mesh, jax.devices()[:1])
    model = factory.create_model(config)
    _, state = state_lib.abstract_train_state(config, model, optim.create_optimizer(config),
                                              factory.example_inputs(config, 1), mesh)
    loss_fn = losses.create_loss_fn(config, model, diffusion_from_config(config.diffusion))
    batch = train_speed.synthetic_batch(config, 4, 0)
    loss, metrics = jax.eval_shape(loss_fn, state.params, batch, jax.random.PRNGKey(0))
    assert loss.shape == () and "loss" in metrics


# What the lent GPU machine lacks (device tool, KINDS.md): a sitecustomize makes them unimportable.
GPU_MACHINE_LACKS = ("tensorflow", "tensorflow_datasets", "tensorboardX", "ftfy", "torch")


def _without_gpu_machine_lacks(site: pathlib.Path) -> str:
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import importlib.abc, sys\n"
        "class _Lacks(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        f"        if name.split('.')[0] in {GPU_MACHINE_LACKS!r}:\n"
        "            raise ModuleNotFoundError(f'{name} is not on the GPU machine', name=name)\n"
        "sys.meta_path.insert(0, _Lacks())\n")
    return str(site)


def test_device_run_script_writes_each_result_and_log(tmp_path):
    # benchmarks/device_run.sh is what a lent GPU machine runs; `all --smoke` on the CPU checks its plumbing,
    # with the packages that machine lacks unimportable.
    import os
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable,
           "GLIDE_GIT_COMMIT": "ab" * 20, "PYTHONPATH": _without_gpu_machine_lacks(tmp_path / "site")}
    done = subprocess.run(["bash", "benchmarks/device_run.sh", "all", "--smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    names = ("sample_speed_base", "train_speed", "sample_speed_upsample", "layer_speed")
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.{ext}" for n in names for ext in ("json", "log"))
    result = json.loads((out / "sample_speed_base.json").read_text())
    assert result["partial"] is False and [row["workload"] for row in result["results"]] == ["base"]
    # The call's output ends with report.py's tables of the three timed programs, so they come back in the tail.
    report = done.stdout[done.stdout.index("== report"):]
    assert "| Program |" in report and all(f"| {name}" in report for name in ("base, batch 2", "train, batch 4",
                                                                            "upsample, batch 2"))
    bad = subprocess.run(["bash", "benchmarks/device_run.sh", "Z"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "unknown phase 'Z'" in bad.stderr


def test_device_run_script_skips_what_its_budget_cannot_fit(tmp_path):
    import os
    env = {**os.environ, "OUT": str(tmp_path), "JAX_PLATFORMS": "cpu", "PYTHON": sys.executable,
           "GLIDE_DEVICE_BUDGET_S": "0"}
    done = subprocess.run(["bash", "benchmarks/device_run.sh", "all", "--smoke"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "== report" not in done.stdout
    for name in ("sample_speed_base", "train_speed", "sample_speed_upsample", "layer_speed"):
        assert f"== {name}: skipped" in done.stdout
    assert not list(tmp_path.iterdir())
