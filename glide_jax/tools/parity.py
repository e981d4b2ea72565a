"""Checks glide-jax against a glide-text2im reference fixture directory.

Usage:
  python -m glide_jax.tools.parity FIXTURE_DIR [--only diffusion,models]

Each group lives in `glide_jax/tools/parity_<group>.py` and exposes
`checks(fixture_dir) -> Iterable[Check]`. Every shape and option is read from
the fixture files themselves, so any fixture set in this format can be
checked. The report has one row per check and ends with `N passed, M failed`.
Exit status 1 if anything failed or a known fixture file could not be checked.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import pathlib
import sys
import traceback
from typing import Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

GROUPS = ("diffusion", "tokenizer", "models", "clip", "sampling")


@dataclasses.dataclass(frozen=True)
class Check:
    """One compared quantity.

    `max_abs` and `rel` are computed by `compare`; a check passes when the
    chosen metric is within `tol`. `error` is set when the check could not be
    run at all (missing array, exception), which always fails.
    """

    name: str
    max_abs: float
    rel: float
    tol: float
    metric: str  # "rel", "rel_l2", "abs" or "exact"
    passed: bool
    error: str | None = None


def to_nhwc(array) -> jax.Array:
    """A fixture's channels-first images, (..., C, H, W) of rank 4 or 5, channels last; lower ranks as they are."""
    array = np.asarray(array)
    return jnp.asarray(np.moveaxis(array, -3, -1) if array.ndim >= 4 else array)


def to_nchw(array) -> np.ndarray:
    """Our channels-last images (rank 4 or 5) in the fixtures' channels-first layout; lower ranks as they are."""
    array = np.asarray(array)
    return np.moveaxis(array, -1, -3) if array.ndim >= 4 else array


def compare(name: str, actual, expected, tol: float, metric: str = "rel",
            atol: float | None = None) -> Check:
    """Compares two arrays.

    Args:
      name: row name.
      actual, expected: array-likes of equal shape.
      tol: bound on the metric.
      metric: "rel" = elementwise max of |a-e| / |e| (entries below 1e-6 of
        max |e| use that floor); "rel_l2" = ||a-e|| / ||e||; "abs" = max |a-e|; "exact" = equal.
      atol: optional extra bound on max |a-e| that must also hold.
    """
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        return Check(name, np.inf, np.inf, tol, metric, False,
                     f"shape {a.shape} != expected {e.shape}")
    if metric == "exact":
        equal = bool(np.array_equal(a, e))
        diff = 0.0 if equal else float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64)))) if a.size else 0.0
        return Check(name, diff, 0.0 if equal else 1.0, 0.0, metric, equal)
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    diff = np.abs(a64 - e64)
    max_abs = float(diff.max()) if diff.size else 0.0
    if metric == "rel_l2":
        rel = float(np.linalg.norm(diff) / max(np.linalg.norm(e64), 1e-30))
    else:
        # Elementwise relative error; entries far below the array's largest
        # magnitude are judged against 1e-6 of that magnitude instead of 0.
        scale = np.maximum(np.abs(e64), np.abs(e64).max(initial=0.0) * 1e-6 + 1e-30)
        rel = float((diff / scale).max()) if diff.size else 0.0
    value = {"rel": rel, "rel_l2": rel, "abs": max_abs}[metric]
    passed = bool(np.isfinite(value) and value <= tol)
    if atol is not None:
        passed = passed and max_abs <= atol
    return Check(name, max_abs, rel, tol, metric, passed)


def failed(name: str, error: str) -> Check:
    """A check that could not be run."""
    return Check(name, np.nan, np.nan, np.nan, "-", False, error)


def run_group(group: str, fixture_dir: pathlib.Path) -> Iterator[Check]:
    """Runs one group, turning an exception into a failed row."""
    try:
        module = importlib.import_module(f"glide_jax.tools.parity_{group}")
        yield from module.checks(fixture_dir)
    except Exception as exc:  # a broken group must show up as a failure
        yield failed(f"{group}: (group crashed)", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


def format_row(check: Check) -> str:
    status = "PASS" if check.passed else "FAIL"
    row = (f"{check.name:<58} {check.max_abs:>11.3e} {check.rel:>11.3e} "
           f"{check.metric:>6} {check.tol:>9.1e}  {status}")
    if check.error:
        row += f"  ({check.error.splitlines()[0]})"
    return row


def main(argv: list[str] | None = None, out: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(prog="python -m glide_jax.tools.parity", description=__doc__.splitlines()[0])
    parser.add_argument("fixture_dir", type=pathlib.Path)
    parser.add_argument("--only", default=",".join(GROUPS),
                        help=f"comma-separated groups from {', '.join(GROUPS)}")
    args = parser.parse_args(argv)
    groups = list(dict.fromkeys(g.strip() for g in args.only.split(",") if g.strip()))  # each group once
    unknown = [g for g in groups if g not in GROUPS]
    if unknown or not groups:
        parser.error(f"unknown group(s) {unknown}; choose from {', '.join(GROUPS)}" if unknown
                     else f"--only {args.only!r} names no group; choose from {', '.join(GROUPS)}")
    if not args.fixture_dir.is_dir():
        what = "is not a directory" if args.fixture_dir.exists() else "does not exist"
        parser.error(f"fixture directory {args.fixture_dir} {what}")
    out(f"{'check':<58} {'max_abs':>11} {'rel_err':>11} {'metric':>6} {'tol':>9}  result")
    n_pass = n_fail = 0
    for group in groups:
        for check in run_group(group, args.fixture_dir):
            out(format_row(check))
            n_pass += check.passed
            n_fail += not check.passed
    out(f"{n_pass} passed, {n_fail} failed")
    return 1 if n_fail or not n_pass else 0


if __name__ == "__main__":
    sys.exit(main())
