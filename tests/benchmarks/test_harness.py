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
