"""What XLA:GPU makes of the benchmark programs, compiled for an H100 without one.

    pip install -e . "jax[cuda12]"        # the CUDA plugin and compiler; no GPU needed
    python benchmarks/aot_compile.py      # writes benchmarks/results/aot_compile_h100.json
    python benchmarks/aot_compile.py --workloads train --devices 8 --out /tmp/train8.json
    python benchmarks/aot_compile.py --workloads train --devices 8 --config configs/paper_base.py --out /tmp/p.json
    python benchmarks/aot_compile.py --workloads train --devices 8 --config configs/paper_upsample.py --out /tmp/u.json
    python benchmarks/aot_compile.py --smoke --platform cpu --out /tmp/aot.json   # tiny, CPU (the tests)

jax can compile for a GPU that is not attached: a PJRT topology made from a
target description (`jax.experimental.topologies.get_topology_desc(platform=
"cuda", target_config=...)`, here an H100 SXM: 132 SMs, 80 GB, compute
capability 9.0, with the cuDNN and CUDA versions of the installed plugin)
gives compile-only devices, and the programs are lowered with abstract
arguments placed on them. Nothing runs, so there are no times; what the
compiled program tells, per workload:

  memory        XLA's buffer assignment: arguments, outputs, temporaries and
                donated (aliased) bytes; peak is about arguments + outputs +
                temporaries - aliased
  loop_state    the bytes per dtype the sampling loop carries (float32 there
                means kernels re-cast at every step; see sampling/precast.py)
  custom_calls  the library calls XLA chose (cuDNN convolutions, cuDNN fused
                attention, cuBLAS)
  fusions       how many fusions the program has
  kernels       every kernel with its FLOPs and bytes, and a roofline time
                model of the run (hlo_kernels.py): kernels per sampling
                step, bytes by kind of kernel, the costliest kernels

The workloads are those of sample_speed.py (the sampling programs, one
device) and train_speed.py (the train step on a mesh of `--devices`
devices). No autotuning happens without a device, so convolution algorithms
and their workspaces may differ a little from a real run; a GPU run of the
speed scripts remains the measurement. `--platform cpu` compiles the same
programs for the local CPU devices instead (what `--smoke` and the tests use).
It imports no TensorFlow.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from contextlib import nullcontext
from typing import Any
from unittest import mock

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

import jax  # noqa: E402  (after the path set-up)
import ml_collections  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec  # noqa: E402

from benchmarks import harness, hlo_kernels, presets, roofline, sample_speed, train_speed  # noqa: E402
from glide_jax import config as config_lib  # noqa: E402
from glide_jax import sharding as sharding_lib  # noqa: E402
from glide_jax.diffusion import diffusion_from_config  # noqa: E402
from glide_jax.models import factory, layers  # noqa: E402
from glide_jax.train import optim  # noqa: E402
from glide_jax.train import state as state_lib  # noqa: E402

WORKLOADS = ("sample_base", "sample_upsample", "train")
# NVIDIA H100 80GB HBM3 (SXM5), as XLA's GpuDeviceInfoProto describes a device.
H100_DEVICE_INFO = """
  threads_per_block_limit: 1024
  threads_per_warp: 32
  shared_memory_per_block: 49152
  shared_memory_per_block_optin: 232448
  shared_memory_per_core: 233472
  threads_per_core_limit: 2048
  core_count: 132
  fpus_per_core: 128
  block_dim_limit_x: 2147483647
  block_dim_limit_y: 65535
  block_dim_limit_z: 65535
  memory_bandwidth: 3352320000000
  l2_cache_size: 52428800
  clock_rate_ghz: 1.98
  device_memory_size: 84929347584
  registers_per_core_limit: 65536
  registers_per_block_limit: 65536
  cuda_compute_capability { major: 9 minor: 0 }
"""
H100_NAME = "NVIDIA H100 80GB HBM3"


def cuda_target_config() -> str:
    """The H100 target description, with the cuDNN and CUDA versions jax's plugin ships."""
    try:
        from jax._src.lib import cuda_versions
        cudnn, cuda = cuda_versions.cudnn_get_version(), cuda_versions.cuda_runtime_get_version()
    except Exception as error:  # noqa: BLE001  (re-raised with what to install)
        raise SystemExit(f"--platform cuda needs jax's CUDA plugin (pip install 'jax[cuda12]'): {error}") from error
    return (f"gpu_device_info {{{H100_DEVICE_INFO}}}\nplatform_name: \"CUDA\"\n"
            f"dnn_version_info {{ major: {cudnn // 10000} minor: {cudnn // 100 % 100} }}\n"
            f"runtime_version {{ major: {cuda // 1000} minor: {cuda // 10 % 100} }}\n"
            f"device_description_str: \"{H100_NAME}\"\n")


def target_devices(platform: str, count: int) -> list[Any]:
    """`count` devices to compile for: compile-only H100s, or local CPU devices."""
    if platform == "cpu":
        devices = jax.devices("cpu")
        if len(devices) < count:
            raise SystemExit(f"--devices {count}: only {len(devices)} CPU devices "
                             "(XLA_FLAGS=--xla_force_host_platform_device_count=N)")
        return devices[:count]
    from jax.experimental import topologies
    topology = topologies.get_topology_desc(platform="cuda", target_config=cuda_target_config(),
                                            topology=f"1x1x{count}")
    return list(topology.devices)


def summary(compiled: Any, sampling: bool) -> dict[str, Any]:
    """The fields of one compiled program (see the module docstring); loop_state for sampling only."""
    text = compiled.as_text() or ""
    calls = {line.split('custom_call_target="', 1)[1].split('"', 1)[0]
             for line in text.splitlines() if 'custom_call_target="' in line}
    static = roofline.memory_report(None, compiled)["compiled"]
    if static is not None:
        static["peak_estimate_bytes"] = static.pop("total_bytes")
    return {"memory": static, "loop_state": hlo_kernels.loop_state(text) if sampling else None,
            "custom_calls": sorted(calls), "fusions": text.count(" fusion("), "kernels": hlo_kernels.report(text)}


def compile_sampling(kind: str, smoke: bool, dtype: str, attention_impl: str, batch: int,
                     device: Any) -> dict[str, Any]:
    """One sampling program of sample_speed.py, compiled for `device`."""
    config = presets.model_config(kind, smoke, dtype, attention_impl)
    module = factory.create_model(config)
    params = jax.eval_shape(lambda: sample_speed.init_params(module, config, 0))
    sample = config_lib.sample_defaults()
    sampler = sample.sampler if kind == "base" else sample.upsample_sampler
    respacing = ("10" if smoke else sample.steps) if kind == "base" else sample.upsample_steps
    diffusion = diffusion_from_config(config.diffusion, respacing)
    program = (sample_speed.base_program if kind == "base" else sample_speed.upsample_program)(
        module, diffusion, sampler)
    inputs = jax.eval_shape(lambda: sample_speed.stage_inputs(kind, config, batch, jax.random.PRNGKey(0)))
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    replicated = NamedSharding(Mesh([device], ("devices",)), PartitionSpec())
    start = time.perf_counter()
    compiled = program.lower({"params": roofline.abstract(params, replicated)}, roofline.abstract(inputs, replicated),
                             roofline.abstract(key, replicated)).compile()
    return {"workload": f"sample_{kind}", "batch_size": batch, "respacing": respacing, "devices": 1,
            "compile_s": roofline.significant(time.perf_counter() - start), **summary(compiled, True)}


def experiment_train_config(path: str, dtype: str, batch: int, remat: bool,
                            attention_impl: str) -> ml_collections.ConfigDict:
    """An experiment file's config for the train step: its model and mesh.fsdp/tensor kept."""
    config = config_lib.load_config_file(path)
    config.model.dtype, config.model.attention_impl = dtype, attention_impl
    config.model.remat = bool(config.model.remat or remat)
    config.data.batch_size = batch
    config.mesh.data = None  # every device fsdp and tensor leave over
    return config_lib.validate(config)


def compile_train(config: ml_collections.ConfigDict, devices: list[Any]) -> dict[str, Any]:
    """The train step of `config` on a mesh of `devices`, compiled."""
    batch, remat = int(config.data.batch_size), bool(config.model.remat)
    mesh = sharding_lib.create_mesh(config.mesh, devices)
    model = factory.create_model(config)
    optimizer = optim.create_optimizer(config)
    shardings, state = state_lib.abstract_train_state(config, model, optimizer,
                                                      factory.example_inputs(config, 1), mesh)
    _, jitted, batch_sharding = train_speed.jitted_step(config, model, optimizer, shardings, mesh)
    host_batch = train_speed.synthetic_batch(config, batch, 0)
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    start = time.perf_counter()
    compiled = jitted.lower(state, roofline.abstract(host_batch, batch_sharding),
                            roofline.abstract(key, sharding_lib.replicated(mesh))).compile()
    return {"workload": "train", "batch_size": batch, "remat": remat, "devices": len(devices),
            "mesh": dict(mesh.shape), "compile_s": roofline.significant(time.perf_counter() - start),
            **summary(compiled, False)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Compiles every requested workload; returns the result record."""
    devices = target_devices(args.platform, args.devices)
    # The models resolve attention_impl "auto" by asking whether they run on
    # a CUDA GPU; compiling for one that is not attached, the answer is yes.
    on_cuda = mock.patch.object(layers, "_on_cuda", lambda: True) if args.platform == "cuda" else nullcontext()
    results = []
    with on_cuda:
        for workload in args.workloads:
            if workload == "train":
                config = (experiment_train_config(args.config, args.dtype, args.batch_size, args.remat,
                                                  args.attention_impl) if args.config else
                          train_speed.train_config(args.smoke, args.dtype, args.batch_size, args.remat,
                                                   args.attention_impl))
                row = {**compile_train(config, devices), "config": args.config or "configs/glide_base.py"}
            else:
                row = compile_sampling(workload.split("_", 1)[1], args.smoke, args.dtype, args.attention_impl,
                                       args.batch_size, devices[0])
            print(f"{row['workload']} batch {row['batch_size']} on {row['devices']}: compiled in "
                  f"{row['compile_s']:.0f} s, peak estimate {row['memory']['peak_estimate_bytes'] / 1e9:.2f} GB",
                  flush=True)
            results.append(row)
    return {"benchmark": "aot_compile", "smoke": args.smoke, **harness.run_metadata(devices),
            "settings": {"platform": args.platform, "dtype": args.dtype, "attention_impl": args.attention_impl,
                         "batch_size": args.batch_size, "devices": args.devices, "remat": args.remat,
                         "config": args.config,
                         "workloads": list(args.workloads)},
            "results": results}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny models and batches (for the tests)")
    parser.add_argument("--platform", choices=("cuda", "cpu"), default="cuda",
                        help="compile for an H100 (default; needs jax's CUDA plugin, no GPU) or the local CPU")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default 64; smoke 2)")
    parser.add_argument("--devices", type=int, default=1, help="devices of the train step's mesh (default 1)")
    parser.add_argument("--remat", action="store_true", help="rematerialise residual blocks in the train step")
    parser.add_argument("--config", default=None,
                        help="train an experiment file's model instead (e.g. configs/paper_base.py; its "
                             "mesh.fsdp/tensor and remat are kept)")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--attention-impl", default="auto", choices=config_lib.ATTENTION_IMPLS)
    parser.add_argument("--out", default=None,
                        help="results JSON (default benchmarks/results/aot_compile_h100.json; smoke: none)")
    args = parser.parse_args(argv)
    args.batch_size = args.batch_size or (2 if args.smoke else 64)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.platform == "cuda":
        # Compile-only CUDA devices need the plugin registered but no CUDA
        # client; jax's own backend stays the CPU (and no GPU is looked for).
        jax.config.update("jax_platforms", "cpu")
    out = harness.default_out("aot_compile_h100" if args.platform == "cuda" else "aot_compile_cpu",
                              args.smoke, args.out)
    text = harness.write_json(run(args), out)
    print(f"wrote {out}" if out else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
