"""The two layers the issue calls out, timed alone: GroupNorm + SiLU and attention.

    python benchmarks/layer_speed.py                 # writes benchmarks/results/layer_speed.json
    python benchmarks/layer_speed.py --smoke --out /tmp/layer_smoke.json   # tiny, CPU, seconds

Each case is one jitted program timed with the harness (compile apart, warm-up,
median of `--repeats` samples of `--calls-per-sample` back-to-back calls, so
that dispatch and sync do not inflate sub-millisecond kernels). It compares what the models run against what they
ran before, on the shapes of the issue's H100 measurements:

  groupnorm_silu  SiLU(GroupNorm32(x)) on 128x64x64x192 bfloat16 (the base
                  model's 64x64 level with CFG rows): `layers.GroupNorm32`
                  with one-pass statistics (per-channel shifted sums: what
                  the models run on a GPU) and with two-pass ones, against
                  the straightforward float32 group reshape with two-pass
                  statistics (the issue measured 1.76 ms, 229 GB/s, for it).
                  Forward, and forward + backward (the training path).
  attention       `layers.attention` with batch 128, 1024 image tokens, 1024 +
                  128 keys (text in front), 3 heads of 64, bfloat16: XLA's
                  implementation against cuDNN's (the issue measured 2.46 ms
                  and 0.46 ms); cuDNN rows are skipped, with the reason, where
                  it cannot run (`layers.attention_implementation`).

Reported per case: median ms, and for the memory-bound GroupNorm the
effective bandwidth of its least traffic (read x once, write the output once;
the backward reads x and the upstream gradient and writes dx), against the
H100's 3.35 TB/s. The JSON is rewritten after each case (`"partial": true`
until the last). `--smoke` shrinks the shapes so the tests can run it on a
CPU; its numbers mean nothing. Without an accelerator the full shapes need
`--allow-cpu`.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Callable

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402  (after the path set-up)
import jax.numpy as jnp  # noqa: E402

from benchmarks import harness, roofline  # noqa: E402
from glide_jax.models import layers  # noqa: E402

NORM_SHAPE = (128, 64, 64, 192)
NORM_SHAPE_SMOKE = (2, 8, 8, 64)
# (batch, image tokens, text tokens, heads, head width)
ATTENTION_SHAPE = (128, 1024, 128, 3, 64)
ATTENTION_SHAPE_SMOKE = (2, 16, 8, 2, 16)
GROUPS = 32


def straightforward_group_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, groups: int,
                               dtype: Any) -> jax.Array:
    """The "before": float32 (B, HW, G, C/G) view, two-pass mean and variance over axes 1 and 3."""
    channels = x.shape[-1]
    grouped = x.astype(jnp.float32).reshape(x.shape[0], -1, groups, channels // groups)
    mean = grouped.mean(axis=(1, 3), keepdims=True)
    var = jnp.square(grouped - mean).mean(axis=(1, 3), keepdims=True)
    normed = ((grouped - mean) * jax.lax.rsqrt(var + 1e-5)).reshape(x.shape)
    return (normed * scale + bias).astype(dtype)


def _norm_variants(dtype: Any) -> dict[str, Callable]:
    def ours(one_pass):
        module = layers.GroupNorm32(GROUPS, dtype=dtype, one_pass=one_pass)
        return lambda params, x: jax.nn.silu(module.apply({"params": params}, x))

    def before(params, x):
        return jax.nn.silu(straightforward_group_norm(x, params["scale"], params["bias"], GROUPS, dtype))

    return {"one_pass": ours(True), "two_pass": ours(False), "straightforward": before}


def _time(fn: Callable, args: tuple, method: dict[str, Any]) -> dict[str, Any]:
    """Compiles and times `fn(*args)`; `method` holds repeats, warmup, calls_per_sample and options."""
    compiled, _, compile_s = harness.compile_timed(jax.jit(fn), *args, compiler_options=method["options"])
    timing, out = harness.time_calls(lambda: compiled(*args), method["repeats"], method["warmup"], compile_s,
                                     method["calls_per_sample"])
    return {**timing.as_dict(), "finite": harness.all_finite(out)}


def measure_group_norm(shape, method: dict[str, Any], done: Callable[[dict], None]) -> None:
    """Forward and forward+backward rows for every GroupNorm variant, each passed to `done`."""
    dtype = jnp.bfloat16
    x = jax.random.normal(jax.random.PRNGKey(0), shape, dtype)
    upstream = jax.random.normal(jax.random.PRNGKey(1), shape, dtype)
    channels = shape[-1]
    params = {"scale": 1.0 + 0.1 * jax.random.normal(jax.random.PRNGKey(2), (channels,)),
              "bias": 0.1 * jax.random.normal(jax.random.PRNGKey(3), (channels,))}
    elements = x.size
    itemsize = jnp.dtype(dtype).itemsize
    for name, fn in _norm_variants(dtype).items():
        def backward(params, x, upstream, fn=fn):
            _, pullback = jax.vjp(lambda x: fn(params, x), x)
            return pullback(upstream)[0]

        for direction, program, args, traffic in (
                ("forward", fn, (params, x), 2 * elements * itemsize),
                ("forward+backward", backward, (params, x, upstream), 3 * elements * itemsize)):
            row = _time(program, args, method)
            done({"case": "groupnorm_silu", "variant": name, "direction": direction,
                  "shape": list(shape), "dtype": "bfloat16", "groups": GROUPS,
                  "ms": roofline.significant(1e3 * row["median_s"]),
                  "least_bytes": traffic,
                  "effective_gb_per_s": roofline.significant(traffic / row["median_s"] / 1e9),
                  **row})


def measure_attention(shape, method: dict[str, Any], done: Callable[[dict], None]) -> None:
    """One row per implementation, passed to `done`; cuDNN's is skipped (with the reason) where it cannot run."""
    batch, tokens, text, heads, width = shape
    dtype = jnp.bfloat16
    keys = jax.random.split(jax.random.PRNGKey(4), 3)
    q = jax.random.normal(keys[0], (batch, tokens, heads, width), dtype)
    k = jax.random.normal(keys[1], (batch, tokens + text, heads, width), dtype)
    v = jax.random.normal(keys[2], (batch, tokens + text, heads, width), dtype)
    flops = 4 * batch * heads * tokens * (tokens + text) * width  # two matmuls, 2 FLOPs per multiply-add
    for impl in ("xla", "cudnn"):
        row = {"case": "attention", "variant": impl, "direction": "forward",
               "shape": {"batch": batch, "query_tokens": tokens, "key_tokens": tokens + text,
                         "heads": heads, "head_width": width}, "dtype": "bfloat16", "model_flops": flops}
        try:
            layers.attention_implementation(impl, dtype, width)
        except ValueError as exc:
            done({**row, "skipped": str(exc)})
            continue
        timed = _time(lambda q, k, v, impl=impl: layers.attention(q, k, v, dtype, impl), (q, k, v), method)
        done({**row, "ms": roofline.significant(1e3 * timed["median_s"]),
              "achieved_tflops": roofline.significant(flops / timed["median_s"] / 1e12), **timed})


def run(args: argparse.Namespace, out: pathlib.Path | None = None) -> dict[str, Any]:
    """Every case; the record is rewritten to `out` after each (`"partial": true`)."""
    method = {"repeats": args.repeats, "warmup": args.warmup, "calls_per_sample": args.calls_per_sample,
              "options": harness.SMOKE_COMPILER_OPTIONS if args.smoke else None}
    results = []
    record = {
        "benchmark": "layer_speed",
        "smoke": args.smoke,
        "settings": {"repeats": args.repeats, "warmup": args.warmup, "calls_per_sample": args.calls_per_sample},
        **harness.run_metadata(jax.devices()[:1]),
        "results": results,
    }

    def done(row: dict[str, Any]) -> None:
        results.append(row)
        harness.write_json(record, out, partial=True)
        speed = row.get("ms")
        print(f"{row['case']} {row['variant']} {row['direction']}: "
              + (f"{speed:.4g} ms" if speed is not None else f"skipped ({row['skipped']})"), flush=True)

    measure_group_norm(NORM_SHAPE_SMOKE if args.smoke else NORM_SHAPE, method, done)
    measure_attention(ATTENTION_SHAPE_SMOKE if args.smoke else ATTENTION_SHAPE, method, done)
    return record


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (CPU, for the tests)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 20; smoke 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs after compiling (default 2; smoke 1)")
    parser.add_argument("--calls-per-sample", type=int, default=None,
                        help="back-to-back calls per timed sample (default 10; smoke 1)")
    parser.add_argument("--xla-flags", default=None, help="appended to XLA_FLAGS before jax starts")
    parser.add_argument("--allow-cpu", action="store_true", help="run the full shapes on a CPU on purpose")
    parser.add_argument("--out", default=None,
                        help="results JSON (default benchmarks/results/layer_speed.json; smoke: none)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.smoke else 20)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 2)
    args.calls_per_sample = args.calls_per_sample or (1 if args.smoke else 10)
    if min(args.repeats, args.calls_per_sample) < 1 or args.warmup < 0:
        parser.error("--repeats and --calls-per-sample must be positive, --warmup not negative")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.add_xla_flags(args.xla_flags)
    refusal = harness.require_accelerator(args.smoke, args.allow_cpu)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    out = harness.default_out("layer_speed", args.smoke, args.out)
    result = run(args, out)
    text = harness.write_json(result, out)
    print(f"wrote {out}" if out else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
