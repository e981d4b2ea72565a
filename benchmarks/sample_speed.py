"""Sampling speed of GLIDE's two stages at the released sizes (random weights).

    python benchmarks/sample_speed.py                    # writes benchmarks/results/sample_speed.json
    python benchmarks/sample_speed.py --batch-sizes 1 64 --repeats 5 --dtype bfloat16
    python benchmarks/sample_speed.py --xla-flags="--xla_gpu_enable_latency_hiding_scheduler=true"
    python benchmarks/sample_speed.py --smoke --out /tmp/sample_smoke.json   # tiny, CPU, seconds

Workloads (the reference numbers are in docs/PERFORMANCE.md):

  base      configs/glide_base.py, 64x64, respacing "100", DDPM, classifier-
            free guidance 3.0 (2B model rows per step: B captions + B empty)
  upsample  configs/glide_upsample.py, 64 -> 256, respacing "fast27", DDIM,
            initial noise x 0.997, no guidance

Each batch is one call of the same jitted program the sampling pipeline runs
(`glide_jax.sampling.stages.sample_base` / `sample_upsample`: the text is
encoded once, then the whole reverse loop is a `lax.scan` on the device), on
one device. Reported per batch size: compile time, median seconds per batch
over `--repeats` runs after `--warmup`, images/s, whether every output is
finite, the model FLOPs of the batch (steps x one U-Net call + the text
encoder), the achieved TFLOP/s and the compute floor at 790 TFLOP/s, and
`loop_state`: the bytes per dtype the compiled reverse loop carries, which
says whether XLA cast the float32 kernels to bfloat16 once, before the loop
(bf16 bytes), or casts them at every step (f32 bytes); and `kernel_model`:
the compiled program's kernels with their FLOPs and bytes and the time an
H100 roofline model predicts for them (hlo_kernels.py), to set beside the
measured time. The JSON is rewritten after each row (`"partial": true`
until the last), and each row is printed with its compile time, finiteness
and peak memory, so a run cut short keeps what it measured. On a machine
where jax finds no accelerator the script stops at once (`--allow-cpu` runs
anyway).

`--smoke` runs tiny models (16 px, one U-Net level) with short
respacings on whatever device jax picks; the tests run it so the script
cannot rot. It imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import flax.linen as nn  # noqa: E402  (after the path set-up)
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402

from benchmarks import harness, hlo_kernels, presets, roofline  # noqa: E402
from glide_jax import config as config_lib  # noqa: E402
from glide_jax.diffusion import diffusion_from_config  # noqa: E402
from glide_jax.models import factory  # noqa: E402
from glide_jax.sampling import stages  # noqa: E402

WORKLOADS = ("base", "upsample")
GUIDANCE_SCALE = 3.0  # the text2im notebook's classifier-free guidance
CAPTION_TOKENS = 12  # real tokens per caption (compute does not depend on it)


def init_params(module: nn.Module, config: ml_collections.ConfigDict, seed: int) -> Any:
    """Random float32 params of `module`, created on the default device."""
    inputs = factory.example_inputs(config, 1)
    init = jax.jit(lambda key: nn.unbox(module.init(key, **inputs))["params"])
    return init(jax.random.PRNGKey(seed))


def caption_rows(config: ml_collections.ConfigDict, batch: int, guidance: bool, key) -> dict[str, jax.Array]:
    """Random captions (B rows), plus B empty rows under classifier-free guidance.

    Empty rows are what the pipeline feeds for the unconditional half: every
    token the pad token (the last vocabulary id) and the mask all False.
    """
    length, pad = config.text.text_ctx, config.text.n_vocab - 1
    real = min(CAPTION_TOKENS, length)
    tokens = jax.random.randint(key, (batch, length), 0, pad, jnp.int32)
    mask = jnp.broadcast_to(jnp.arange(length) < real, (batch, length))
    tokens = jnp.where(mask, tokens, pad)
    if guidance:
        tokens = jnp.concatenate([tokens, jnp.full_like(tokens, pad)])
        mask = jnp.concatenate([mask, jnp.zeros_like(mask)])
    return {"tokens": tokens, "mask": mask}


def base_program(module: nn.Module, diffusion, sampler: str):
    """jit(variables, inputs, key) -> (B, 64, 64, 3): the pipeline's base stage with CFG."""
    def run(variables, inputs, key):
        samples = stages.sample_base(module, variables, diffusion, sampler, tokens=inputs["tokens"],
                                     mask=inputs["mask"], guidance_scale=inputs["guidance_scale"], key=key)
        return samples[: inputs["tokens"].shape[0] // 2]

    return jax.jit(run)


def upsample_program(module: nn.Module, diffusion, sampler: str):
    """jit(variables, inputs, key) -> (B, 256, 256, 3): the pipeline's upsampling stage."""
    def run(variables, inputs, key):
        return stages.sample_upsample(module, variables, diffusion, sampler, base_samples=inputs["base_samples"],
                                      tokens=inputs["tokens"], mask=inputs["mask"],
                                      temperature=inputs["temperature"], key=key)

    return jax.jit(run)


def stage_inputs(kind: str, config: ml_collections.ConfigDict, batch: int, key) -> dict[str, jax.Array]:
    """The program inputs of a batch of `batch` images."""
    caption_key, image_key = jax.random.split(key)
    sample = config_lib.sample_defaults()
    if kind == "base":
        inputs = caption_rows(config, batch, True, caption_key)
        inputs["guidance_scale"] = jnp.float32(GUIDANCE_SCALE)
        return inputs
    low = config_lib.low_res_size(config)
    inputs = caption_rows(config, batch, False, caption_key)
    inputs["base_samples"] = jax.random.uniform(image_key, (batch, low, low, 3), jnp.float32, -1.0, 1.0)
    inputs["temperature"] = jnp.float32(sample.upsample_temp)
    return inputs


def batch_model_flops(module: nn.Module, params: Any, inputs: dict[str, jax.Array], steps: int) -> dict[str, float]:
    """Model FLOPs of one batch: the text encoder once, then `steps` U-Net calls."""
    variables = {"params": roofline.abstract(params)}
    tokens, mask = roofline.abstract(inputs["tokens"]), roofline.abstract(inputs["mask"])
    text_flops = roofline.model_flops(lambda v, a, b: module.apply(v, a, b, method="encode_text"),
                                      variables, tokens, mask)
    text_emb = jax.eval_shape(lambda v, a, b: module.apply(v, a, b, method="encode_text"), variables, tokens, mask)
    rows, size = tokens.shape[0], module.image_size
    extra = {}
    if "base_samples" in inputs:
        extra["low_res"] = roofline.abstract(inputs["base_samples"])
    x = jax.ShapeDtypeStruct((rows, size, size, 3), jnp.float32)
    t = jax.ShapeDtypeStruct((rows,), jnp.int32)
    unet_flops = roofline.model_flops(lambda v, x_, t_, e, kw: module.apply(v, x_, t_, text_emb=e, **kw),
                                      variables, x, t, text_emb, extra)
    return {"unet_call_flops": unet_flops, "text_encoder_flops": text_flops,
            "batch_flops": steps * unet_flops + text_flops}


def measure(kind: str, config: ml_collections.ConfigDict, params: Any, batch: int, respacing: str,
            repeats: int, warmup: int, seed: int, compiler_options: dict[str, Any] | None = None
            ) -> dict[str, Any]:
    """Times one stage at one batch size; see the module docstring for the fields."""
    sample = config_lib.sample_defaults()
    sampler = sample.sampler if kind == "base" else sample.upsample_sampler
    diffusion = diffusion_from_config(config.diffusion, respacing)
    module = factory.create_model(config)
    program = (base_program if kind == "base" else upsample_program)(module, diffusion, sampler)
    data_key, run_key = jax.random.split(jax.random.PRNGKey(seed))
    inputs = stage_inputs(kind, config, batch, data_key)
    variables = {"params": params}
    compiled, _, compile_s = harness.compile_timed(program, variables, inputs, run_key,
                                                   compiler_options=compiler_options)
    keys = iter(jax.random.split(run_key, warmup + repeats))
    timing, samples = harness.time_calls(lambda: compiled(variables, inputs, next(keys)), repeats, warmup,
                                         compile_s)
    steps = int(diffusion.num_timesteps)
    median = timing.median_s
    row = {
        "workload": kind,
        "image_size": config.model.image_size,
        "batch_size": batch,
        "model_rows": int(inputs["tokens"].shape[0]),
        "respacing": respacing,
        "steps": steps,
        "sampler": sampler,
        "guidance_scale": GUIDANCE_SCALE if kind == "base" else None,
        "dtype": config.model.dtype,
        "s_per_batch": roofline.significant(median),
        "images_per_s": roofline.significant(batch / median),
        **timing.as_dict(),
        "finite": harness.all_finite(samples),
        "output_shape": list(samples.shape),
    }
    flops = harness.analysis("FLOP count", batch_model_flops, module, params, inputs, steps)
    if "error" in flops:
        row["flops_error"] = flops["error"]
    else:
        row.update(flops)
        row["achieved_tflops"] = roofline.significant(flops["batch_flops"] / median / 1e12)
        row.update(roofline.floors(flops["batch_flops"]))
    row["memory"] = harness.analysis("memory report", roofline.memory_report, jax.devices()[0], compiled)
    row["loop_state"] = harness.analysis("loop state", hlo_kernels.loop_state, compiled)
    row["kernel_model"] = harness.analysis("kernel model", hlo_kernels.report, compiled)
    return row


def run(args: argparse.Namespace, out: pathlib.Path | None = None) -> dict[str, Any]:
    """All requested workloads and batch sizes; returns the result record.

    The record is rewritten to `out` after every row (`"partial": true`), so
    a run stopped by a time limit keeps the rows it finished.
    """
    results = []
    record = {
        "benchmark": "sample_speed",
        "smoke": args.smoke,
        "settings": {"dtype": args.dtype, "attention_impl": args.attention_impl, "attention": None,
                     "batch_sizes": list(args.batch_sizes), "repeats": args.repeats,
                     "warmup": args.warmup, "seed": args.seed, "base_steps": args.base_steps,
                     "upsample_steps": args.upsample_steps, "workloads": list(args.workloads),
                     "presets": None if args.smoke else {k: presets.PRESETS[k] for k in args.workloads}},
        **harness.run_metadata(jax.devices()[:1]),  # the programs run on the default device
        "results": results,
    }
    options = harness.SMOKE_COMPILER_OPTIONS if args.smoke else None
    for kind in args.workloads:
        config = presets.model_config(kind, args.smoke, args.dtype, args.attention_impl)
        # Both stages have 64-wide heads and one dtype, so they resolve alike.
        record["settings"]["attention"] = presets.resolved_attention(config)
        module = factory.create_model(config)
        params = init_params(module, config, args.seed)
        for batch in args.batch_sizes:
            respacing = args.base_steps if kind == "base" else args.upsample_steps
            row = measure(kind, config, params, batch, respacing, args.repeats, args.warmup, args.seed, options)
            results.append(row)
            harness.write_json(record, out, partial=True)
            print(f"{kind} batch {batch}: {row['s_per_batch']:.4f} s/batch, {row['images_per_s']:.3f} img/s, "
                  f"compile {row['compile_s']:.1f} s, finite {row['finite']}, "
                  f"peak memory {row['memory'].get('peak_bytes')}", flush=True)
        del params
    return record


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models and batches (CPU, for the tests)")
    parser.add_argument("--dtype", default="bfloat16", choices=config_lib.DTYPES, help="compute dtype")
    parser.add_argument("--attention-impl", default="auto", choices=config_lib.ATTENTION_IMPLS,
                        help="config.model.attention_impl (auto: cuDNN on CUDA in 16-bit)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                        help="images per batch (default 1 64; smoke 2)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--base-steps", default=None, help='base respacing (default "100"; smoke "10")')
    parser.add_argument("--upsample-steps", default=None, help='upsampler respacing (default "fast27")')
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per point (default 3; smoke 2)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs after compiling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--xla-flags", default=None, help="appended to XLA_FLAGS before jax starts")
    parser.add_argument("--allow-cpu", action="store_true", help="run the full-size models on a CPU on purpose")
    parser.add_argument("--out", default=None,
                        help="results JSON (default benchmarks/results/sample_speed.json; smoke: none)")
    args = parser.parse_args(argv)
    args.batch_sizes = args.batch_sizes or ([2] if args.smoke else [1, 64])
    sample = config_lib.sample_defaults()
    args.base_steps = args.base_steps or ("10" if args.smoke else sample.steps)
    args.upsample_steps = args.upsample_steps or sample.upsample_steps
    args.repeats = args.repeats or (2 if args.smoke else 3)
    if min(args.batch_sizes) < 1:
        parser.error(f"--batch-sizes {args.batch_sizes}: must be positive")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    harness.add_xla_flags(args.xla_flags)
    refusal = harness.require_accelerator(args.smoke, args.allow_cpu)
    if refusal:
        print(refusal, file=sys.stderr)
        return 2
    out = harness.default_out("sample_speed", args.smoke, args.out)
    try:
        result = run(args, out)
    except jax.errors.JaxRuntimeError as exc:
        message = harness.out_of_memory_hint(exc, "try smaller --batch-sizes")
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 1
    text = harness.write_json(result, out)
    print(f"wrote {out}" if out else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
