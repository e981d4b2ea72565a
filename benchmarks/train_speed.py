"""Training speed of GLIDE's base model: the real jitted train step at batch 64.

    python benchmarks/train_speed.py                     # writes benchmarks/results/train_speed.json
    python benchmarks/train_speed.py --batch-size 64 --repeats 10 --dtype bfloat16
    python benchmarks/train_speed.py --remat             # rematerialised residual blocks
    python benchmarks/train_speed.py --smoke --out /tmp/train_smoke.json   # tiny, CPU, seconds

What runs is what `train.py` runs, minus the input pipeline: the model of
configs/glide_base.py with bf16 compute (float32 params), the hybrid
diffusion loss, AdamW (after global-norm clipping where the preset sets
`optim.grad_clip_norm`; glide_base does not), the EMA update, all in
`glide_jax.train.step.make_train_step`, jitted by `jit_train_step` over a
mesh of all local devices with the state donated. The batch is synthetic
(images uniform in [-1, 1], random captions), already on the devices.

Reported: compile time; median step time over `--repeats` steps after
`--warmup`; images/s; model FLOPs per step (matmuls and convolutions of the
step's jaxpr: the number comparable with the reference's 45.7 TFLOP) and
XLA's cost analysis of the lowered and compiled step; MFU = model FLOPs /
step time / (the bf16 matmul rate measured in the same process on one
device, 8192^3, smoke 256^3, x the device count); peak device memory (allocator high-water mark where the
backend has one, else XLA's memory analysis); whether the loss and the
new parameters are finite; and `kernel_model`, the step's kernels with
their FLOPs and bytes and an H100 roofline model's time (hlo_kernels.py).
The JSON is first written once the step is timed (`"partial": true`, before
the matmul peak and so without MFU), then complete. Without an accelerator
the script stops at once (`--allow-cpu` runs anyway).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402  (after the path set-up)
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks import harness, hlo_kernels, presets, roofline  # noqa: E402
from glide_jax import config as config_lib  # noqa: E402
from glide_jax import sharding as sharding_lib  # noqa: E402
from glide_jax.diffusion import diffusion_from_config  # noqa: E402
from glide_jax.models import factory  # noqa: E402
from glide_jax.train import losses, optim  # noqa: E402
from glide_jax.train import state as state_lib  # noqa: E402
from glide_jax.train import step as step_lib  # noqa: E402


def train_config(smoke: bool, dtype: str, batch_size: int, remat: bool,
                 attention_impl: str = "auto") -> ml_collections.ConfigDict:
    """The base preset (or the smoke one) as the training run would see it."""
    config = presets.model_config("base", smoke, dtype, attention_impl)
    config.model.remat = remat
    config.data.batch_size = batch_size
    config.mesh.data = None  # every device given to the mesh
    return config_lib.validate(config)


def optimizer_label(optim: ml_collections.ConfigDict) -> str:
    """The update the step runs, e.g. "adamw + ema (0.9999,)" (clipping only where configured)."""
    clip = "" if optim.grad_clip_norm is None else f"clip_by_global_norm({optim.grad_clip_norm}) + "
    return f"{clip}adamw + ema {tuple(optim.ema_rates)}"


def synthetic_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int) -> dict[str, np.ndarray]:
    """A batch of `config.model.kind` as the input pipeline delivers it (host numpy).

    image, tokens and mask (a fifth of the captions empty, as caption dropout
    leaves them, except for the CLIP), plus `low_res` for the upsamplers and
    `inpaint_mask` (1 = known pixel) for inpainting.
    """
    rng = np.random.default_rng(seed)
    kind = config.model.kind
    size, length = config_lib.image_size(config), config_lib.text_length(config)
    pad = (config.clip if kind == "clip" else config.text).n_vocab - 1
    mask = np.arange(length)[None, :] < rng.integers(1, length + 1, (batch_size, 1))
    if kind != "clip":
        mask[: batch_size // 5] = False  # caption dropout: some empty captions
    tokens = np.where(mask, rng.integers(0, pad, (batch_size, length)), pad).astype(np.int32)
    image = rng.uniform(-1.0, 1.0, (batch_size, size, size, 3)).astype(np.float32)
    batch = {"image": image, "tokens": tokens, "mask": mask}
    low = config_lib.low_res_size(config)
    if low is not None:
        batch["low_res"] = rng.uniform(-1.0, 1.0, (batch_size, low, low, 3)).astype(np.float32)
    if kind in config_lib.INPAINT_KINDS:
        batch["inpaint_mask"] = (rng.uniform(size=(batch_size, size, size, 1)) < 0.5).astype(np.float32)
    return batch


def build_step(config: ml_collections.ConfigDict, devices) -> dict[str, Any]:
    """Mesh, sharded TrainState and the jitted step, as `glide_jax.train.loop.build_run` makes them."""
    mesh = sharding_lib.create_mesh(config.mesh, devices)
    model = factory.create_model(config)
    optimizer = optim.create_optimizer(config)
    state, shardings = state_lib.create_train_state(config, model, optimizer, factory.example_inputs(config, 1),
                                                    mesh)
    step_fn, jitted, batch_sharding = jitted_step(config, model, optimizer, shardings, mesh)
    return {"mesh": mesh, "state": state, "step_fn": step_fn, "jitted": jitted, "batch_sharding": batch_sharding}


def jitted_step(config: ml_collections.ConfigDict, model, optimizer, shardings: Any, mesh) -> tuple[Any, Any, Any]:
    """(step_fn, jitted step, batch sharding): the train step as `train.py` jits it for `mesh`."""
    loss_fn = losses.create_loss_fn(config, model, diffusion_from_config(config.diffusion))
    step_fn = step_lib.make_train_step(config, loss_fn, optimizer)
    batch_sharding = sharding_lib.batch_sharding(mesh, config.mesh)
    jitted = step_lib.jit_train_step(step_fn, shardings, batch_sharding, config.mesh)
    return step_fn, jitted, batch_sharding


def step_flops(config: ml_collections.ConfigDict, state: Any, batch: Any, rng: Any) -> dict[str, float]:
    """Matmul + conv FLOPs of one step, without and with rematerialisation.

    `model_flops_per_step` is counted on the step of the same config with
    remat off, so MFU does not credit recomputation; `executed_flops_per_step`
    is the step as configured (larger with --remat).
    """
    def count(cfg):
        model = factory.create_model(cfg)
        optimizer = optim.create_optimizer(cfg)
        step_fn = step_lib.make_train_step(
            cfg, losses.create_loss_fn(cfg, model, diffusion_from_config(cfg.diffusion)), optimizer)
        return roofline.model_flops(step_fn, *roofline.abstract((state, batch, rng)))

    plain = config.copy_and_resolve_references()
    plain.model.remat = False
    executed = count(config)
    return {"model_flops_per_step": count(plain) if config.model.remat else executed,
            "executed_flops_per_step": executed}


def measure(config: ml_collections.ConfigDict, devices, repeats: int, warmup: int, seed: int,
            compiler_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Compiles and times the train step; returns the JSON fields of the step."""
    built = build_step(config, devices)
    batch_size = int(config.data.batch_size)
    batch = sharding_lib.shard_batch(synthetic_batch(config, batch_size, seed), built["batch_sharding"])
    rng = jax.random.PRNGKey(seed)
    state = built["state"]
    flops = step_flops(config, state, batch, rng)
    compiled, lowered, compile_s = harness.compile_timed(built["jitted"], state, batch, rng,
                                                         compiler_options=compiler_options)
    holder = {"state": state}
    del state, built["state"]  # donated at the first step

    def one_step():
        holder["state"], metrics = compiled(holder["state"], batch, rng)
        return holder["state"], metrics  # waited for whole, the new state included

    timing, (_, metrics) = harness.time_calls(one_step, repeats, warmup, compile_s)
    memory = harness.analysis("memory report", roofline.memory_report, devices[0], compiled)
    finite = harness.all_finite(metrics) and harness.all_finite(holder["state"].params)
    median = timing.median_s
    return {
        "batch_size": batch_size,
        "image_size": config.model.image_size,
        "dtype": config.model.dtype,
        "remat": bool(config.model.remat),
        "step_s": roofline.significant(median),
        "images_per_s": roofline.significant(batch_size / median),
        **timing.as_dict(),
        "loss": float(metrics["loss"]),
        "finite": finite,
        **flops,
        "xla_lowered": roofline.xla_cost(lowered),
        "xla_compiled": roofline.xla_cost(compiled),
        "model_tflops": roofline.significant(flops["model_flops_per_step"] / median / 1e12),
        **roofline.floors(flops["model_flops_per_step"]),
        "memory": memory,
        "kernel_model": harness.analysis("kernel model", hlo_kernels.report, compiled),
    }


def run(args: argparse.Namespace, out: pathlib.Path | None = None) -> dict[str, Any]:
    """The step measurement, then the matmul peak it is compared against.

    The record is written to `out` once the step is timed (`"partial":
    true`, no MFU yet), so a run stopped during the peak keeps the step.
    """
    devices = jax.local_devices()[: args.devices] if args.devices else jax.local_devices()
    config = train_config(args.smoke, args.dtype, args.batch_size, args.remat, args.attention_impl)
    options = harness.SMOKE_COMPILER_OPTIONS if args.smoke else None
    step = measure(config, devices, args.repeats, args.warmup, args.seed, options)
    print(f"train step batch {step['batch_size']}: {step['step_s']:.4f} s, {step['images_per_s']:.1f} img/s, "
          f"compile {step['compile_s']:.1f} s, finite {step['finite']}, "
          f"peak memory {step['memory'].get('peak_bytes')}", flush=True)
    record = {
        "benchmark": "train_speed",
        "smoke": args.smoke,
        "settings": {"preset": None if args.smoke else presets.PRESETS["base"], "dtype": args.dtype,
                     "attention_impl": args.attention_impl, "attention": presets.resolved_attention(config),
                     "batch_size": args.batch_size, "remat": args.remat, "repeats": args.repeats,
                     "warmup": args.warmup, "seed": args.seed, "matmul_size": args.matmul_size,
                     "devices": len(devices),
                     "optimizer": optimizer_label(config.optim)},
        **harness.run_metadata(devices),
        "matmul_peak": None,
        "train_step": step,
    }
    harness.write_json(record, out, partial=True)
    # After the step, so its buffers are gone and the memory peak is the step's.
    peak = roofline.matmul_peak(args.matmul_size, "bfloat16", device=devices[0])
    record["matmul_peak"] = peak
    achieved_tflops = step["model_flops_per_step"] / step["median_s"] / 1e12
    step["mfu"] = roofline.significant(achieved_tflops / (peak["tflops"] * len(devices)))
    compiled_flops = step["xla_compiled"]["flops"]
    step["xla_compiled_utilization"] = (None if not compiled_flops else
                                        roofline.significant(compiled_flops / step["step_s"] / 1e12 / peak["tflops"]))
    print(f"MFU {step['mfu']:.3f} of {peak['tflops']:.1f} TFLOP/s (bf16 {args.matmul_size}^3 matmul)", flush=True)
    return record


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny model, batch and matmul (CPU, for the tests)")
    parser.add_argument("--dtype", default="bfloat16", choices=config_lib.DTYPES, help="compute dtype")
    parser.add_argument("--batch-size", type=int, default=None, help="global batch (default 64; smoke 4)")
    parser.add_argument("--remat", action="store_true", help="config.model.remat: recompute residual blocks")
    parser.add_argument("--attention-impl", default="auto", choices=config_lib.ATTENTION_IMPLS,
                        help="config.model.attention_impl (auto: cuDNN on CUDA in 16-bit)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 10; smoke 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps after compiling (default 3; smoke 1)")
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="side of the peak matmul (default 8192; smoke 256)")
    parser.add_argument("--devices", type=int, default=None,
                        help="use the first N local devices (default all; smoke 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--xla-flags", default=None, help="appended to XLA_FLAGS before jax starts")
    parser.add_argument("--allow-cpu", action="store_true", help="run the full-size model on a CPU on purpose")
    parser.add_argument("--out", default=None,
                        help="results JSON (default benchmarks/results/train_speed.json; smoke: none)")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (4 if args.smoke else 64)
    args.repeats = args.repeats or (2 if args.smoke else 10)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.smoke else 3)
    args.devices = args.devices or (1 if args.smoke else None)
    args.matmul_size = args.matmul_size or (256 if args.smoke else 8192)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.add_xla_flags(args.xla_flags)
    refusal = harness.require_accelerator(args.smoke, args.allow_cpu)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    out = harness.default_out("train_speed", args.smoke, args.out)
    try:
        result = run(args, out)
    except jax.errors.JaxRuntimeError as exc:
        message = harness.out_of_memory_hint(
            exc, "try --remat (rematerialised residual blocks) or a smaller --batch-size")
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    text = harness.write_json(result, out)
    print(f"wrote {out}" if out else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
