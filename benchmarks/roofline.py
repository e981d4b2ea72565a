"""FLOP and byte accounting, matmul peak and device memory for the benchmarks.

Three FLOP counts are reported, because they answer different questions:

* `model_flops(fn, *args)`: 2 x multiply-adds of every matmul and
  convolution in the jaxpr of `fn` (attention included, elementwise work
  excluded). This is the usual "model FLOPs" of MFU, the same quantity as
  PyTorch's flop counter that gave the reference's 45.7 TFLOP per training
  step, and it does not depend on the backend or on rematerialisation.
* `xla_cost(lowered)`: XLA's HloCostAnalysis of the unoptimised program:
  one FLOP per elementwise op on top of the matmuls, but convolutions
  counted over in-bounds taps only (zero padding excluded, which at 8x8
  with 3x3 kernels removes 16%), so it can come out above or below the
  model FLOPs; and "bytes accessed" as if nothing were fused (an upper
  bound on memory traffic).
* `xla_cost(compiled)`: the same analysis after XLA's optimisations for
  the target backend (fusion changes the bytes; remat changes the FLOPs).

HloCostAnalysis counts a `while`/`scan` body once, whatever its trip count,
so the sampling loops are costed as steps x one model call.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

# Compute floor of the targets: about the bf16 dense matmul rate an
# H100 SXM reaches in practice (the reference measured 798 TFLOP/s).
FLOOR_TFLOPS = 790.0
# H100 SXM5 HBM3 bandwidth (datasheet), for the memory floor.
HBM_TBPS = 3.35


def xla_cost(stage: Any) -> dict[str, float | None]:
    """{"flops", "bytes_accessed"} from a `Lowered` or `Compiled` program.

    Older jax returns a one-element list, some backends None; missing values
    come back as None.
    """
    try:
        cost = stage.cost_analysis()
    except (NotImplementedError, RuntimeError, ValueError):
        cost = None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    cost = cost or {}
    flops, nbytes = cost.get("flops"), cost.get("bytes accessed")
    return {"flops": None if flops is None else float(flops),
            "bytes_accessed": None if nbytes is None else float(nbytes)}


def _dot_flops(eqn) -> float:
    lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]

    def size(shape, dims):
        return float(np.prod([shape[d] for d in dims], dtype=np.float64))

    lhs_free = [d for d in range(len(lhs)) if d not in (*lhs_contract, *lhs_batch)]
    rhs_free = [d for d in range(len(rhs)) if d not in (*rhs_contract, *rhs_batch)]
    return 2.0 * size(lhs, lhs_batch) * size(lhs, lhs_free) * size(rhs, rhs_free) * size(lhs, lhs_contract)


def _conv_flops(eqn) -> float:
    # Each output element sums over one kernel window of in_features / groups
    # channels: out_size x (kernel size / out_features) multiply-adds.
    rhs = eqn.invars[1].aval.shape
    out = eqn.outvars[0].aval.shape
    out_features = rhs[eqn.params["dimension_numbers"].rhs_spec[0]]
    return 2.0 * float(np.prod(out, dtype=np.float64)) * float(np.prod(rhs, dtype=np.float64)) / out_features


def _fused_attention_flops(eqn) -> float:
    # cuDNN attention (jax.nn.dot_product_attention(implementation="cudnn")):
    # q (B, T, N, H), k (B, S, N, H). Forward: QK^T and PV; backward: four
    # matmuls of the same size (any recomputation is not model work).
    q, k = (v.aval.shape for v in eqn.invars[:2])
    forward = 4.0 * q[0] * q[2] * q[1] * k[1] * q[3]
    return 2.0 * forward if "bwd" in eqn.primitive.name else forward


def _sub_jaxprs(value):
    """Jaxprs held in an equation parameter (a jaxpr, closed jaxpr, or a tuple of them)."""
    if hasattr(value, "eqns"):
        return [value]
    if hasattr(value, "jaxpr") and hasattr(value, "consts"):
        return [value.jaxpr]
    if isinstance(value, (tuple, list)):
        return [j for item in value for j in _sub_jaxprs(item)]
    return []


def jaxpr_flops(jaxpr) -> float:
    """Matmul + convolution FLOPs of a (closed) jaxpr, recursing into calls.

    A `scan` body counts `length` times, a `cond` its costliest branch, a
    `while` body once (its trip count is not static).
    """
    jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "dot_general":
            total += _dot_flops(eqn)
        elif name == "conv_general_dilated":
            total += _conv_flops(eqn)
        elif name.startswith("dot_product_attention"):
            total += _fused_attention_flops(eqn)
        elif name == "cond":
            total += max(jaxpr_flops(b) for b in eqn.params["branches"])
        else:
            inner = sum(jaxpr_flops(j) for v in eqn.params.values() for j in _sub_jaxprs(v))
            total += inner * (eqn.params["length"] if name == "scan" else 1)
    return total


def model_flops(fn: Callable, *args, **kwargs) -> float:
    """Matmul + convolution FLOPs of one call `fn(*args)`; args may be abstract."""
    return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))


def significant(value: float, digits: int = 5) -> float:
    """`value` rounded to `digits` significant figures (a tiny CPU rate keeps its precision)."""
    return float(f"{value:.{digits}g}")


def abstract(tree: Any, sharding: Any = None) -> Any:
    """The jax.ShapeDtypeStruct of every array leaf (lowering needs no data), placed with `sharding` if given."""
    return jax.tree_util.tree_map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x), sharding=sharding), tree)


def matmul_peak(size: int, dtype: str = "bfloat16", repeats: int = 10, warmup: int = 3,
                device: Any = None, calls_per_sample: int = 10) -> dict[str, Any]:
    """Measured rate of one (size x size) @ (size x size) matmul on `device`.

    This is the practical peak that MFU is quoted against (8192^3 bf16 on a
    GPU; the issue's H100 reached 629 TFLOP/s with JAX 0.11.2). Each timed
    sample runs `calls_per_sample` matmuls back to back and waits once, so
    the host's dispatch and sync (tens of microseconds against ~1.7 ms) do
    not lower the peak and so raise the MFU quoted against it.

    Returns:
      {"size", "dtype", "median_s", "tflops", "calls_per_sample"}
      (2 size^3 FLOPs / median time per matmul).
    """
    device = device or jax.devices()[0]
    keys = jax.random.split(jax.random.PRNGKey(0))
    a, b = (jax.device_put(jax.random.normal(k, (size, size), dtype), device) for k in keys)
    matmul = jax.jit(jnp.matmul).lower(a, b).compile()
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        for _ in range(calls_per_sample - 1):
            matmul(a, b)
        jax.block_until_ready(matmul(a, b))
        if index >= warmup:
            times.append((time.perf_counter() - start) / calls_per_sample)
    median = statistics.median(times)
    return {"size": size, "dtype": dtype, "median_s": significant(median),
            "tflops": significant(2.0 * size ** 3 / median / 1e12), "calls_per_sample": calls_per_sample}


def memory_report(device: Any, compiled: Any = None) -> dict[str, Any]:
    """Peak device memory: the allocator's high-water mark where the backend has one.

    GPUs report `memory_stats()["peak_bytes_in_use"]` (everything the
    process held at once, parameters and state included). Elsewhere, and
    always as a second opinion, XLA's static `memory_analysis()` of
    `compiled`: arguments + outputs + temporaries - donated (aliased) bytes.

    Returns:
      {"peak_bytes", "source", "compiled": {...} or None}.
    """
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    analysis = compiled.memory_analysis() if compiled is not None else None
    static = None
    if analysis is not None:
        fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
        static = {f: int(getattr(analysis, f, 0) or 0) for f in fields}
        static["total_bytes"] = (static["argument_size_in_bytes"] + static["output_size_in_bytes"]
                                 + static["temp_size_in_bytes"] - static["alias_size_in_bytes"])
    if stats and "peak_bytes_in_use" in stats:
        return {"peak_bytes": int(stats["peak_bytes_in_use"]), "source": "memory_stats", "compiled": static}
    if static is not None:
        return {"peak_bytes": static["total_bytes"], "source": "memory_analysis", "compiled": static}
    return {"peak_bytes": None, "source": None, "compiled": None}


def floors(flops: float | None, nbytes: float | None = None) -> dict[str, float | None]:
    """Seconds at FLOOR_TFLOPS (compute) and at HBM_TBPS (bytes), if given."""
    return {
        "compute_floor_s": None if flops is None else flops / (FLOOR_TFLOPS * 1e12),
        "memory_floor_s": None if nbytes is None else nbytes / (HBM_TBPS * 1e12),
    }
