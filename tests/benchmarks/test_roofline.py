"""FLOP counting, cost normalisation, floors and memory reports of benchmarks/roofline.py."""

import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2]))

from benchmarks import roofline  # noqa: E402

S = jax.ShapeDtypeStruct


def _conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def test_dot_general_with_batch_dims():
    flops = roofline.model_flops(lambda a, b: jnp.einsum("bij,bjk->bik", a, b),
                                 S((3, 4, 5), jnp.float32), S((3, 5, 6), jnp.float32))
    assert flops == 2 * 3 * 4 * 5 * 6


def test_conv_and_its_gradient():
    x, w = S((2, 8, 8, 4), jnp.float32), S((3, 3, 4, 6), jnp.float32)
    forward = 2 * (2 * 8 * 8 * 6) * (3 * 3 * 4)  # output elements x window MACs
    assert roofline.model_flops(_conv, x, w) == forward
    # d/dx and d/dw are one convolution each of the forward's size.
    grads = jax.grad(lambda x_, w_: _conv(x_, w_).sum(), argnums=(0, 1))
    assert roofline.model_flops(grads, x, w) == 3 * forward


def test_grouped_conv_counts_each_group_window():
    x, w = S((1, 5, 5, 8), jnp.float32), S((3, 3, 2, 8), jnp.float32)  # 4 groups of 2 channels
    conv = lambda a, b: jax.lax.conv_general_dilated(  # noqa: E731
        a, b, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=4)
    assert roofline.model_flops(conv, x, w) == 2 * (5 * 5 * 8) * (3 * 3 * 2)


def test_control_flow():
    a = S((16, 16), jnp.float32)
    one = 2 * 16 ** 3

    def scanned(m):
        return jax.lax.scan(lambda c, _: (c @ m, None), m, None, length=7)[0]

    def branched(m):
        return jax.lax.cond(m[0, 0] > 0, lambda: m @ m @ m, lambda: m @ m)

    def looped(m):
        return jax.lax.fori_loop(0, jnp.int32(m[0, 0]), lambda i, c: c @ m, m)  # trip count not static

    assert roofline.model_flops(scanned, a) == 7 * one
    assert roofline.model_flops(branched, a) == 2 * one
    assert roofline.model_flops(looped, a) == one
    assert roofline.model_flops(jax.jit(lambda m: m @ m), a) == one  # through pjit


def test_attention_matches_xla_cost_analysis():
    q, k = S((2, 10, 3, 8), jnp.float32), S((2, 12, 3, 8), jnp.float32)
    flops = roofline.model_flops(jax.nn.dot_product_attention, q, k, k)
    assert flops == 2 * (2 * 2 * 3 * 10 * 12 * 8)  # QK^T and PV
    matmul = S((64, 64), jnp.float32)
    lowered = jax.jit(jnp.matmul).lower(matmul, matmul)
    assert roofline.xla_cost(lowered)["flops"] == roofline.model_flops(jnp.matmul, matmul, matmul)


def test_xla_cost_normalises_backend_shapes():
    as_list = types.SimpleNamespace(cost_analysis=lambda: [{"flops": 3.0, "bytes accessed": 8.0}])
    missing = types.SimpleNamespace(cost_analysis=lambda: None)
    assert roofline.xla_cost(as_list) == {"flops": 3.0, "bytes_accessed": 8.0}
    assert roofline.xla_cost(missing) == {"flops": None, "bytes_accessed": None}


def test_floors():
    out = roofline.floors(790e12, 3.35e12)
    assert out["compute_floor_s"] == pytest.approx(1.0) and out["memory_floor_s"] == pytest.approx(1.0)
    assert roofline.floors(None) == {"compute_floor_s": None, "memory_floor_s": None}


def test_memory_report_prefers_the_allocator_peak():
    analysis = types.SimpleNamespace(argument_size_in_bytes=100, output_size_in_bytes=40, temp_size_in_bytes=60,
                                     alias_size_in_bytes=30)
    compiled = types.SimpleNamespace(memory_analysis=lambda: analysis)
    gpu = types.SimpleNamespace(memory_stats=lambda: {"peak_bytes_in_use": 12345})
    cpu = types.SimpleNamespace(memory_stats=lambda: None)
    assert roofline.memory_report(gpu, compiled)["peak_bytes"] == 12345
    report = roofline.memory_report(cpu, compiled)
    assert report["source"] == "memory_analysis" and report["peak_bytes"] == 100 + 40 + 60 - 30


def test_matmul_peak_runs():
    out = roofline.matmul_peak(64, "float32", repeats=2, warmup=1)
    assert out["size"] == 64 and out["tflops"] > 0
    assert out["tflops"] == pytest.approx(2 * 64 ** 3 / out["median_s"] / 1e12, rel=0.01)
