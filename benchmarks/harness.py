"""Timing method and run records shared by the benchmark scripts.

The method (docs/PERFORMANCE.md, "Method"):

1. Compile explicitly (`jitted.lower(...).compile()`) and report the
   compile time on its own, so it never leaks into a timed run.
2. Call the compiled program `warmup` times untimed: allocators, cuDNN/cuBLAS
   autotuning caches and host-side dispatch settle.
3. Take `repeats` timed samples, each of `calls_per_sample` back-to-back
   calls waited for once with `jax.block_until_ready` (one call for whole
   programs; several for sub-millisecond kernels, whose per-call dispatch
   and sync would otherwise count), and report the median time per call
   (robust to a stray slow run on a shared machine). Every time is kept in
   the JSON.

Each result JSON carries `run_metadata()`: date, device, jax/jaxlib/flax
versions, git commit and XLA_FLAGS, so a number can be traced to its code
and machine. The scripts rewrite their JSON after every measured row with
`"partial": true` (`write_json(..., partial=True)`), so a run cut short by a
time limit keeps what it measured, and the analysis after a timing (kernel
model, memory, FLOP counts) goes through `analysis()`, so a failure there
costs that field, not the run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp

from benchmarks.roofline import significant

REPO = pathlib.Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "benchmarks" / "results"


@dataclasses.dataclass(frozen=True)
class Timing:
    """Wall-clock seconds of one benchmarked program.

    Attributes:
      compile_s: lowering + XLA compilation (None when not compiled here).
      warmup_s: the untimed warm-up samples, for reference (seconds per call).
      times_s: the timed samples, seconds per call; the result is their median.
      calls_per_sample: back-to-back calls in each sample.
    """

    compile_s: float | None
    warmup_s: tuple[float, ...]
    times_s: tuple[float, ...]
    calls_per_sample: int = 1

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.times_s))

    def as_dict(self) -> dict[str, Any]:
        """JSON fields: compile_s, median_s, min_s, max_s, times_s, warmup_s, calls_per_sample."""
        return {
            "compile_s": None if self.compile_s is None else significant(self.compile_s),
            "median_s": significant(self.median_s),
            "min_s": significant(min(self.times_s)),
            "max_s": significant(max(self.times_s)),
            "times_s": [significant(t) for t in self.times_s],
            "warmup_s": [significant(t) for t in self.warmup_s],
            "calls_per_sample": self.calls_per_sample,
        }


# --smoke only: XLA:CPU spends most of a tiny model's compile in LLVM; the
# smoke runs check the plumbing, not the speed, so they skip its optimisations.
SMOKE_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def compile_timed(jitted: Any, *args, compiler_options: dict[str, Any] | None = None,
                  **kwargs) -> tuple[Any, Any, float]:
    """Lowers and compiles `jitted` for these arguments (real or abstract).

    Args:
      jitted: a `jax.jit` function.
      *args, **kwargs: its arguments, arrays or jax.ShapeDtypeStruct.
      compiler_options: XLA debug options for this compile only (e.g.
        SMOKE_COMPILER_OPTIONS); None keeps the defaults and XLA_FLAGS.

    Returns:
      (compiled, lowered, seconds): the executable, the lowered program (for
      the unoptimised cost analysis) and the lowering + compile time.
    """
    start = time.perf_counter()
    lowered = jitted.lower(*args, **kwargs)
    compiled = lowered.compile(compiler_options=compiler_options) if compiler_options else lowered.compile()
    return compiled, lowered, time.perf_counter() - start


def time_calls(call: Callable[[], Any], repeats: int, warmup: int = 1,
               compile_s: float | None = None, calls_per_sample: int = 1) -> tuple[Timing, Any]:
    """Times `call()` (which runs the program once and returns its outputs).

    The call is responsible for threading state between runs (e.g. a train
    step that donates its state). Each sample dispatches `calls_per_sample`
    calls back to back and waits for the last one's outputs before the clock
    stops; a device runs its programs in order, so that is the end of all of
    them. The sample's time is divided by `calls_per_sample`.

    Args:
      call: no-argument function; its return value is blocked on.
      repeats: timed samples (>= 1).
      warmup: untimed samples before them (>= 0).
      compile_s: compile time measured beforehand, recorded in the Timing.
      calls_per_sample: calls per sample (>= 1).

    Returns:
      (timing, output of the last call).
    """
    if repeats < 1 or warmup < 0 or calls_per_sample < 1:
        raise ValueError(f"repeats={repeats} must be >= 1, warmup={warmup} >= 0 and "
                         f"calls_per_sample={calls_per_sample} >= 1")
    output = None
    warmups, times = [], []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        for _ in range(calls_per_sample - 1):
            call()
        output = jax.block_until_ready(call())
        per_call = (time.perf_counter() - start) / calls_per_sample
        (warmups if index < warmup else times).append(per_call)
    return Timing(compile_s, tuple(warmups), tuple(times), calls_per_sample), output


def analysis(name: str, fn: Callable[..., Any], *args, **kwargs) -> Any:
    """`fn(*args, **kwargs)`, or {"error": ...} (with a warning) if it raises.

    For the accounting done after a program was timed (kernel model, memory,
    FLOP counts): a parser meeting a new HLO dialect must cost its own field,
    not the timings already taken.
    """
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any failure of an analysis is recorded, never fatal
        message = f"{type(exc).__name__}: {exc}"[:500]
        print(f"warning: {name} failed ({message}); the JSON records the error", file=sys.stderr, flush=True)
        return {"error": message}


def require_accelerator(smoke: bool, allow_cpu: bool) -> str | None:
    """An error line when a full-size benchmark is about to run on the CPU, else None.

    jax falls back to the CPU when its GPU plugin fails to start; the
    full-size models would then run for hours instead of failing. `--smoke`
    runs and `--allow-cpu` (a CPU measurement on purpose) pass.
    """
    backend = jax.default_backend()
    if smoke or allow_cpu or backend != "cpu":
        return None
    return (f"error: jax's backend is {backend!r}: no GPU or TPU was found, and the full-size models would "
            "take hours on a CPU. Check the accelerator's jax install (JAX_PLATFORMS=cuda makes jax say why "
            "it failed), or pass --smoke (tiny models) or --allow-cpu (measure the CPU on purpose).")


def all_finite(tree: Any) -> bool:
    """True if every floating-point leaf of `tree` is free of NaN and inf."""
    leaves = [x for x in jax.tree_util.tree_leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return all(bool(jnp.isfinite(x).all()) for x in leaves)


def add_xla_flags(flags: str | None) -> None:
    """Appends `flags` to XLA_FLAGS for this process.

    XLA reads the variable once, when jax first initialises a backend, so this
    must run before anything touches a device; the scripts call it first
    thing in `main`. Callers that already use jax (tests) must set XLA_FLAGS
    themselves.
    """
    if flags:
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()


def out_of_memory_hint(exc: BaseException, hint: str) -> str | None:
    """A one-line message if `exc` is XLA running out of device memory, else None."""
    if isinstance(exc, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(exc):
        return f"out of device memory: {str(exc).splitlines()[0][:300]}\n{hint}"
    return None


def git_commit() -> dict[str, Any]:
    """{"commit": sha or None, "dirty": bool or None} of the repository.

    Where the tree is a copy without `.git` (a lent GPU machine), the
    environment can say it: GLIDE_GIT_COMMIT=<sha>, GLIDE_GIT_DIRTY=0 or 1.
    """
    def git(*args):
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, timeout=20,
                              check=True).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        dirty_env = os.environ.get("GLIDE_GIT_DIRTY")
        return {"commit": os.environ.get("GLIDE_GIT_COMMIT") or None,
                "dirty": None if dirty_env is None else dirty_env.strip().lower() in ("1", "true", "yes")}
    return {"commit": sha, "dirty": dirty}


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except (ImportError, AttributeError):
        return None


def run_metadata(devices: Sequence[Any]) -> dict[str, Any]:
    """Where and with what a result was measured.

    Args:
      devices: the devices the benchmark ran on.
    """
    first = devices[0]
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device_kind": first.device_kind,
        "platform": first.platform,
        "num_devices": len(devices),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "optax": _version("optax"),
        "python": platform.python_version(),
        "host": platform.platform(),
        "cpu_count": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        **git_commit(),
    }


def write_json(result: dict[str, Any], out: str | pathlib.Path | None, partial: bool = False) -> str:
    """Writes `result` as indented JSON to `out` (if given); returns the text.

    The file gets `"partial": partial` (true while rows are still to come).
    It is written to a temporary name and renamed, so a run killed while
    writing leaves the previous version, never half a file.
    """
    text = json.dumps({**result, "partial": partial}, indent=2)
    if out is not None:
        path = pathlib.Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text + "\n")
        temporary.replace(path)
    return text


def default_out(name: str, smoke: bool, out: str | None) -> pathlib.Path | None:
    """`--out` if given, else benchmarks/results/<name>.json; smoke runs write nothing by default."""
    if out is not None:
        return pathlib.Path(out)
    return None if smoke else RESULTS_DIR / f"{name}.json"
