"""Input pipeline throughput: examples per second from a built glide_shapes.

    python benchmarks/input_pipeline.py                 # full run, writes results JSON
    python benchmarks/input_pipeline.py --smoke         # seconds; what tests run

Measures, after the dataset is built (the build time is reported separately):
  * base batches: 64x64 images + GPT-2 tokens (the base model's input),
  * upsample batches: 256x256 images + 64x64 low_res + tokens.
Batches are host numpy arrays (mesh=None), so the number is the CPU pipeline
alone. Besides wall-clock examples/s it reports examples per CPU-second (the
process's CPU time over all threads), which does not depend on what else the
machine runs, and the load average at the end. Target: >= 1000 base examples/s on 2 CPU cores (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from glide_jax import config as config_lib  # noqa: E402  (after the path set-up)

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "input_pipeline.json"


def _config(data_dir: str, kind: str, batch_size: int, train_size: int, threads: int | None):
    config = config_lib.base_config()
    config.model.kind = kind
    config.model.image_size = 256 if kind == "upsample" else 64
    d = config.data
    d.data_dir, d.batch_size, d.num_threads = data_dir, batch_size, threads
    d.shapes_train_size, d.shapes_validation_size = train_size, 16
    return config_lib.validate(config)


def measure(config, batches: int, warmup: int) -> dict:
    """Examples/s over `batches` batches after `warmup` (pipeline start-up excluded)."""
    from glide_jax.data import create_input_pipeline  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    pipe = create_input_pipeline(config, split="train", seed=0)
    for _ in range(warmup):
        next(pipe)
    ready, cpu_ready = time.perf_counter(), time.process_time()
    for _ in range(batches):
        next(pipe)
    elapsed, cpu = time.perf_counter() - ready, time.process_time() - cpu_ready
    examples = batches * pipe.host_batch_size
    return {
        "kind": config.model.kind,
        "image_size": config.model.image_size,
        "batch_size": pipe.host_batch_size,
        "batches": batches,
        "startup_s": round(ready - start, 3),
        "examples_per_s": round(examples / elapsed, 1),
        # Load-independent cost: examples per second of CPU time used by this
        # process (all threads). On a shared machine wall-clock rates undercount.
        "examples_per_cpu_s": round(examples / cpu, 1),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def run(smoke: bool, data_dir: str | None, threads: int | None) -> dict:
    """Builds glide_shapes in `data_dir` (a temporary one if None) and measures both kinds."""
    if data_dir is None:
        with tempfile.TemporaryDirectory(prefix="glide_jax_bench_") as tmp:
            return run(smoke, tmp, threads)
    train_size = 64 if smoke else 4096
    batch_size, batches, warmup = (8, 3, 1) if smoke else (64, 60, 5)
    from glide_jax.data import sources  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    sources.make_builder(_config(data_dir, "base", batch_size, train_size, threads).data).download_and_prepare()
    build_s = time.perf_counter() - start
    runs = [measure(_config(data_dir, kind, batch_size, train_size, threads), batches, warmup)
            for kind in ("base", "upsample")]
    return {
        "benchmark": "input_pipeline",
        "smoke": smoke,
        "dataset": f"glide_shapes train={train_size} resolution=256",
        "build_s": round(build_s, 2),
        "cpu_count": os.cpu_count(),
        "num_threads": threads,
        "platform": platform.platform(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": runs,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny dataset, few batches (for tests)")
    parser.add_argument("--data_dir", default=None, help="TFDS data dir (default: a fresh temp dir)")
    parser.add_argument("--threads", type=int, default=None, help="tf.data threads (default: CPU count)")
    parser.add_argument("--out", default=None, help=f"results JSON (default: {RESULTS} unless --smoke)")
    args = parser.parse_args(argv)
    result = run(args.smoke, args.data_dir, args.threads)
    out = args.out or (None if args.smoke else RESULTS)
    text = json.dumps(result, indent=2)
    if out:
        pathlib.Path(out).parent.mkdir(parents=True, exist_ok=True)
        pathlib.Path(out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
