"""Timing method and run records of benchmarks/harness.py."""

import json
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks import harness  # noqa: E402


def test_time_calls_warms_up_then_takes_the_median():
    calls = []

    def call():
        calls.append(len(calls))
        time.sleep(0.03 if len(calls) == 1 else 0.001)  # the first (warm-up) call is slow
        return jnp.ones(3) * len(calls)

    timing, out = harness.time_calls(call, repeats=3, warmup=1, compile_s=2.0)
    assert len(calls) == 4 and float(out[0]) == 4.0
    assert len(timing.warmup_s) == 1 and len(timing.times_s) == 3
    assert timing.warmup_s[0] >= 0.03 and timing.median_s < 0.03
    assert timing.median_s == sorted(timing.times_s)[1]
    row = timing.as_dict()
    assert row["compile_s"] == 2.0 and row["min_s"] <= row["median_s"] <= row["max_s"]
    with pytest.raises(ValueError, match="repeats=0"):
        harness.time_calls(call, repeats=0)


def test_compile_timed_returns_a_working_executable():
    fn = jax.jit(lambda a: a * 2)
    compiled, lowered, seconds = harness.compile_timed(fn, jnp.arange(3.0))
    assert seconds > 0 and "multiply" in lowered.as_text()
    assert compiled(jnp.arange(3.0)).tolist() == [0.0, 2.0, 4.0]
    fast, _, _ = harness.compile_timed(fn, jnp.arange(3.0), compiler_options=harness.SMOKE_COMPILER_OPTIONS)
    assert fast(jnp.ones(3)).tolist() == [2.0, 2.0, 2.0]


def test_all_finite():
    assert harness.all_finite({"a": jnp.ones(2, jnp.bfloat16), "b": jnp.arange(3)})
    assert not harness.all_finite({"a": jnp.array([1.0, jnp.nan], jnp.bfloat16)})
    assert not harness.all_finite([jnp.array([jnp.inf])])


def test_run_metadata_and_json(tmp_path):
    meta = harness.run_metadata(jax.devices()[:1])
    assert meta["platform"] == "cpu" and meta["num_devices"] == 1 and meta["jax"] == jax.__version__
    assert len(meta["commit"]) == 40 and isinstance(meta["dirty"], bool)
    out = tmp_path / "sub" / "r.json"
    text = harness.write_json({"x": 1, **meta}, out)
    assert json.loads(out.read_text()) == json.loads(text)
    assert harness.default_out("a", smoke=True, out=None) is None
    assert harness.default_out("a", smoke=False, out=None) == harness.RESULTS_DIR / "a.json"
    assert harness.default_out("a", smoke=True, out=str(out)) == out


def test_out_of_memory_hint():
    oom = jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 123 bytes.\nmore")
    message = harness.out_of_memory_hint(oom, "try --remat")
    assert message.startswith("out of device memory: RESOURCE_EXHAUSTED") and message.endswith("try --remat")
    assert harness.out_of_memory_hint(jax.errors.JaxRuntimeError("INTERNAL: x"), "h") is None
    assert harness.out_of_memory_hint(ValueError("RESOURCE_EXHAUSTED"), "h") is None


def test_time_calls_divides_back_to_back_calls():
    calls = []

    def call():
        calls.append(1)
        time.sleep(0.01)
        return jnp.ones(1)

    timing, _ = harness.time_calls(call, repeats=2, warmup=1, calls_per_sample=3)
    assert len(calls) == 9 and timing.calls_per_sample == 3
    assert all(0.009 < t < 0.03 for t in timing.times_s)  # per call, not per sample of three
    assert timing.as_dict()["calls_per_sample"] == 3
    with pytest.raises(ValueError, match="calls_per_sample=0"):
        harness.time_calls(call, repeats=1, calls_per_sample=0)


def test_analysis_records_a_failure_instead_of_raising(capsys):
    assert harness.analysis("sum", sum, [1, 2]) == 3

    def broken(text):
        raise ValueError(f"cannot parse {text!r}")

    assert harness.analysis("kernel model", broken, "fmha") == {"error": "ValueError: cannot parse 'fmha'"}
    assert "warning: kernel model failed (ValueError: cannot parse 'fmha')" in capsys.readouterr().err


def test_require_accelerator_refuses_full_size_runs_on_the_cpu():
    assert jax.default_backend() == "cpu"
    message = harness.require_accelerator(smoke=False, allow_cpu=False)
    assert message.startswith("error: jax's backend is 'cpu'") and "--allow-cpu" in message
    assert harness.require_accelerator(smoke=True, allow_cpu=False) is None
    assert harness.require_accelerator(smoke=False, allow_cpu=True) is None


def test_git_commit_falls_back_to_the_environment(monkeypatch, tmp_path):
    # A copy of the tree without .git (a lent GPU machine) takes the commit from the environment.
    monkeypatch.setattr(harness, "REPO", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    monkeypatch.delenv("GLIDE_GIT_COMMIT", raising=False)
    monkeypatch.delenv("GLIDE_GIT_DIRTY", raising=False)
    assert harness.git_commit() == {"commit": None, "dirty": None}
    monkeypatch.setenv("GLIDE_GIT_COMMIT", "ab" * 20)
    monkeypatch.setenv("GLIDE_GIT_DIRTY", "0")
    assert harness.git_commit() == {"commit": "ab" * 20, "dirty": False}


def test_write_json_marks_partial_results_and_replaces_whole_files(tmp_path):
    out = tmp_path / "r.json"
    harness.write_json({"rows": [1]}, out, partial=True)
    assert json.loads(out.read_text()) == {"rows": [1], "partial": True}
    harness.write_json({"rows": [1, 2]}, out)
    assert json.loads(out.read_text()) == {"rows": [1, 2], "partial": False}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]  # no temporary left behind
