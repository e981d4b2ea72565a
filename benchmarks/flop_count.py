"""FLOP and byte counts of the benchmark workloads at the released sizes, on a CPU.

    python benchmarks/flop_count.py              # writes benchmarks/results/flop_count.json
    python benchmarks/flop_count.py --compile    # adds XLA:CPU's post-fusion counts (minutes)
    python benchmarks/flop_count.py --smoke --out /tmp/flops.json   # tiny models (the tests)

Nothing is allocated: parameters, optimizer state and inputs are abstract
(`jax.eval_shape`, `jax.ShapeDtypeStruct`), and programs are only traced and
lowered. For each model call it records

* model FLOPs: matmuls + convolutions of the jaxpr (`roofline.model_flops`),
* XLA's cost analysis of the lowered (unoptimised, unfused) program: FLOPs
  including elementwise work, and bytes accessed as if nothing were fused,
* with --compile, the same after XLA:CPU's optimisations (its fusion is
  not the GPU's, so those bytes are only indicative),

and then the workloads of sample_speed.py and train_speed.py: a sampling
batch is `steps` U-Net calls (2B rows under classifier-free guidance) plus
one text encoding; the training step is costed as a whole. Each gets its
compute floor at 790 TFLOP/s.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402  (after the path set-up)
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from benchmarks import harness, presets, roofline  # noqa: E402
from benchmarks import train_speed  # noqa: E402
from glide_jax import config as config_lib  # noqa: E402
from glide_jax import sharding as sharding_lib  # noqa: E402
from glide_jax.diffusion import diffusion_from_config  # noqa: E402
from glide_jax.models import factory  # noqa: E402
from glide_jax.train import losses, optim  # noqa: E402
from glide_jax.train import state as state_lib  # noqa: E402
from glide_jax.train import step as step_lib  # noqa: E402


def param_count(params: Any) -> int:
    return int(sum(x.size for x in jax.tree_util.tree_leaves(params)))


def _costs(fn, args: tuple, compile_too: bool) -> dict[str, Any]:
    """Model FLOPs and XLA costs of `fn(*args)`, args abstract."""
    start = time.perf_counter()
    lowered = jax.jit(fn).lower(*args)
    row = {"model_flops": roofline.model_flops(fn, *args), "xla_lowered": roofline.xla_cost(lowered)}
    if compile_too:
        compiled = lowered.compile()
        row["xla_cpu_compiled"] = roofline.xla_cost(compiled)
        row["cpu_memory"] = roofline.memory_report(jax.devices("cpu")[0], compiled)["compiled"]
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def model_call_costs(kind: str, config: ml_collections.ConfigDict, rows: int, compile_too: bool) -> dict[str, Any]:
    """Costs of one U-Net call (text embedding given, as in a sampling step) and of one text encoding."""
    module = factory.create_model(config)
    variables = {"params": factory.abstract_params(config, module)}
    inputs = roofline.abstract(factory.example_inputs(config, rows))
    tokens, mask = inputs.pop("tokens"), inputs.pop("mask")
    x, t = inputs.pop("x"), inputs.pop("timesteps")

    def encode(v, a, b):
        return module.apply(v, a, b, method="encode_text")

    def unet(v, x_, t_, emb, extra):
        return module.apply(v, x_, t_, text_emb=emb, **extra)

    emb = jax.eval_shape(encode, variables, tokens, mask)
    return {
        "model": kind,
        "rows": rows,
        "unet_call": _costs(unet, (variables, x, t, emb, inputs), compile_too),
        "text_encoder": _costs(encode, (variables, tokens, mask), False),
    }


def train_step_costs(config: ml_collections.ConfigDict, batch_size: int, compile_too: bool) -> dict[str, Any]:
    """Costs of the real jitted train step on abstract state and batch (one CPU device)."""
    mesh = sharding_lib.create_mesh(config.mesh, jax.devices("cpu")[:1])
    model = factory.create_model(config)
    optimizer = optim.create_optimizer(config)
    shardings, state = state_lib.abstract_train_state(config, model, optimizer, factory.example_inputs(config, 1),
                                                      mesh)
    step_fn = step_lib.make_train_step(
        config, losses.create_loss_fn(config, model, diffusion_from_config(config.diffusion)), optimizer)
    batch_sharding = sharding_lib.batch_sharding(mesh, config.mesh)
    jitted = step_lib.jit_train_step(step_fn, shardings, batch_sharding, config.mesh)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
             for k, v in train_speed.synthetic_batch(config, batch_size, 0).items()}
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32)
    start = time.perf_counter()
    lowered = jitted.lower(state, batch, rng)
    row = {"batch_size": batch_size, "model_flops": roofline.model_flops(step_fn, state, batch, rng),
           "xla_lowered": roofline.xla_cost(lowered),
           "state_bytes": int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state)))}
    if compile_too:
        compiled = lowered.compile()
        row["xla_cpu_compiled"] = roofline.xla_cost(compiled)
        row["cpu_memory"] = roofline.memory_report(jax.devices("cpu")[0], compiled)["compiled"]
    row["seconds"] = round(time.perf_counter() - start, 2)
    return row


def sampling_workload(name: str, call: dict[str, Any], steps: int, images: int, param_bytes: int
                      ) -> dict[str, Any]:
    """A sampling batch: `steps` U-Net calls plus one text encoding.

    `weight_read_floor_s` is the least memory traffic any implementation
    has: every step reads every float32 parameter once. It bounds small
    batches; `memory_floor_s` (XLA:CPU's fused bytes, with --compile) is
    only indicative, since a GPU fuses differently.
    """
    unet, text = call["unet_call"], call["text_encoder"]
    flops = steps * unet["model_flops"] + text["model_flops"]
    lowered_bytes = steps * unet["xla_lowered"]["bytes_accessed"] + text["xla_lowered"]["bytes_accessed"]
    row = {"workload": name, "images": images, "model_rows": call["rows"], "steps": steps, "model_flops": flops,
           "model_flops_per_image": flops / images, "xla_lowered_bytes": lowered_bytes,
           **roofline.floors(flops),
           "weight_read_floor_s": roofline.floors(None, steps * param_bytes)["memory_floor_s"]}
    if "xla_cpu_compiled" in unet:
        row["xla_cpu_compiled_bytes"] = steps * unet["xla_cpu_compiled"]["bytes_accessed"]
        row["memory_floor_s"] = roofline.floors(None, row["xla_cpu_compiled_bytes"])["memory_floor_s"]
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    base = presets.model_config("base", args.smoke, args.dtype)
    up = presets.model_config("upsample", args.smoke, args.dtype)
    sample = config_lib.sample_defaults()
    base_steps = int(diffusion_from_config(base.diffusion, sample.steps).num_timesteps)
    up_steps = int(diffusion_from_config(up.diffusion, sample.upsample_steps).num_timesteps)
    params = {kind: param_count(factory.abstract_params(c)) for kind, c in
              (("base", base), ("upsample", up))}
    calls, workloads = [], []
    for batch in args.batch_sizes:
        calls.append(model_call_costs("base", base, 2 * batch, args.compile))  # CFG: 2B rows
        workloads.append(sampling_workload(f"base sampling, {sample.steps} steps + CFG, batch {batch}",
                                           calls[-1], base_steps, batch, 4 * params["base"]))
        calls.append(model_call_costs("upsample", up, batch, args.compile))
        workloads.append(sampling_workload(f"upsampler {sample.upsample_steps}, batch {batch}",
                                           calls[-1], up_steps, batch, 4 * params["upsample"]))
        print(f"batch {batch}: done", flush=True)
    train = train_step_costs(train_speed.train_config(args.smoke, args.dtype, args.train_batch, args.remat),
                             args.train_batch, args.compile)
    workloads.append({"workload": f"base training step, batch {args.train_batch}", "images": args.train_batch,
                      "model_flops": train["model_flops"],
                      "model_flops_per_image": train["model_flops"] / args.train_batch,
                      "xla_lowered_bytes": train["xla_lowered"]["bytes_accessed"],
                      **roofline.floors(train["model_flops"])})
    return {
        "benchmark": "flop_count",
        "smoke": args.smoke,
        "settings": {"dtype": args.dtype, "batch_sizes": list(args.batch_sizes), "train_batch": args.train_batch,
                     "remat": args.remat,
                     "compile": args.compile, "floor_tflops": roofline.FLOOR_TFLOPS, "hbm_tbps": roofline.HBM_TBPS},
        **harness.run_metadata(jax.devices("cpu")),
        "params": params,
        "model_calls": calls,
        "train_step": train,
        "workloads": workloads,
    }


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models (for the tests)")
    parser.add_argument("--dtype", default="bfloat16", choices=config_lib.DTYPES, help="compute dtype")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64], help="sampling batch sizes")
    parser.add_argument("--train-batch", type=int, default=64, help="training batch")
    parser.add_argument("--remat", action="store_true", help="training step with config.model.remat")
    parser.add_argument("--compile", action="store_true", help="also compile for XLA:CPU (slow at full size)")
    parser.add_argument("--out", default=None,
                        help="results JSON (default benchmarks/results/flop_count.json; smoke: none)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    result = run(args)
    out = harness.default_out("flop_count", args.smoke, args.out)
    text = harness.write_json(result, out)
    print(f"wrote {out}" if out else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
