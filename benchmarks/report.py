"""The results tables of docs/PERFORMANCE.md, written from the benchmark JSONs.

    python benchmarks/report.py                      # all sample_speed*.json, train_speed*.json in results/
    python benchmarks/report.py FILE.json [...]      # these files only
    python benchmarks/report.py --out report.md      # also write the tables to a file

Prints, in Markdown:

* the table the issue asks for: each workload with the reference's time
  (glide-text2im on an H100, from the issue), the target, ours, the ratio
  (reference time / ours, above 1 is faster), whether the target is met,
  and the device, date and commit of the run;
* measured against predicted: each timed program beside the kernel model's
  prediction (`kernel_model.program.predicted_s`, see `hlo_kernels.py`), so
  the model's error is on record next to the numbers it guided.

Only real runs count: a `--smoke` JSON is refused (its tiny model means
nothing) unless `--allow-smoke` is given, and a run that was not on an
H100/H200, or from a dirty tree, is flagged in its row. The first table
takes runs with the default settings only (bf16, attention "auto", no
remat, no extra XLA flags); others, such as `--attention-impl xla`, appear
in the second, labelled. Where two runs time the same program with the
same settings, the newest wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import pathlib
import sys
from typing import Any, Callable, Sequence

RESULTS_DIR = pathlib.Path(__file__).resolve().parent / "results"
REFERENCE_GPUS = ("H100", "H200")


@dataclasses.dataclass(frozen=True)
class Reference:
    """One workload of the issue: the reference's numbers and our target.

    Attributes:
      label: the workload as the tables name it.
      reference: the reference's result, as the table shows it.
      eager_s, compiled_s: the reference's seconds (None where not measured).
      target: the target, as the table shows it ("-" for none).
      meets: whether a result row meets the target (None: no target).
    """

    label: str
    reference: str
    eager_s: float | None
    compiled_s: float | None
    target: str = "-"
    meets: Callable[[dict[str, Any]], bool] | None = None


# glide-text2im as shipped on an H100 80GB HBM3, PyTorch 2.11, fp16 (the issue).
SAMPLING = {
    ("base", 1): Reference("Base, 100 steps + CFG, batch 1", "5.63 s eager, 2.12 s compiled", 5.63, 2.12,
                           "<= 0.5 s", lambda row: row["s_per_batch"] <= 0.5),
    ("base", 64): Reference("Base, 100 steps + CFG, batch 64",
                            "25.0 s (2.56 img/s) eager, 14.3 s (4.47 img/s) compiled", 25.0, 14.3,
                            ">= 10 img/s", lambda row: row["images_per_s"] >= 10),
    ("upsample", 1): Reference("Upsampler fast27, batch 1", "1.46 s eager", 1.46, None),
    ("upsample", 64): Reference("Upsampler fast27, batch 64", "16.7 s (3.83 img/s) eager", 16.7, None,
                                ">= 12 img/s", lambda row: row["images_per_s"] >= 12),
}
TRAINING = Reference("Base training step, batch 64, bf16 + AdamW",
                     "0.413 s (155 img/s), ~14% MFU of 798 TFLOP/s, 52 GB", 0.413, None,
                     ">= 45% MFU, < 52 GB",
                     lambda row: row["mfu"] >= 0.45 and row["memory"]["peak_bytes"] < 52e9)


class ReportError(ValueError):
    """A results file that cannot go into the tables, with the reason."""


@dataclasses.dataclass(frozen=True)
class Row:
    """One timed program of one run."""

    key: tuple[str, int]  # (workload, batch size); ("train", batch) for the train step
    result: dict[str, Any]  # the JSON's row for it
    run: dict[str, Any]  # the JSON's run metadata
    path: pathlib.Path

    @property
    def seconds(self) -> float:
        return self.result["step_s"] if self.key[0] == "train" else self.result["s_per_batch"]

    @property
    def variant(self) -> str:
        """The settings that differ from the defaults, e.g. "attention xla" ("" for none)."""
        settings = self.run.get("settings", {})
        parts = []
        if settings.get("dtype", "bfloat16") != "bfloat16":
            parts.append(settings["dtype"])
        if settings.get("attention_impl", "auto") != "auto":
            parts.append(f"attention {settings['attention_impl']}")
        if settings.get("remat"):
            parts.append("remat")
        if settings.get("devices", 1) != 1:
            parts.append(f"{settings['devices']} devices")
        if self.run.get("xla_flags"):
            parts.append(f"XLA_FLAGS={self.run['xla_flags']}")
        return ", ".join(parts)


def load_rows(paths: Sequence[pathlib.Path], allow_smoke: bool = False) -> list[Row]:
    """Every timed program in `paths`; of those with the same program and settings, the newest run."""
    rows: dict[tuple[tuple[str, int], str], Row] = {}
    for path in paths:
        try:
            run = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ReportError(f"{path}: cannot read it as JSON ({error})") from error
        kind = run.get("benchmark")
        if kind not in ("sample_speed", "train_speed"):
            raise ReportError(f"{path}: 'benchmark' is {kind!r}, not sample_speed or train_speed")
        if run.get("smoke") and not allow_smoke:
            raise ReportError(f"{path}: a --smoke run (tiny model on {run.get('device_kind')}); "
                              "its numbers mean nothing (pass --allow-smoke to tabulate it anyway)")
        try:
            if kind == "train_speed":
                found = [Row(("train", run["train_step"]["batch_size"]), run["train_step"], run, path)]
            else:
                found = [Row((r["workload"], r["batch_size"]), r, run, path) for r in run["results"]]
        except KeyError as error:
            raise ReportError(f"{path}: missing key {error} (not written by benchmarks/{kind}.py?)") from error
        for row in found:
            slot = (row.key, row.variant)
            if slot not in rows or run.get("date", "") >= rows[slot].run.get("date", ""):
                rows[slot] = row
    return sorted(rows.values(), key=lambda row: (row.key, row.variant))


def _flags(row: Row) -> str:
    run, notes = row.run, []
    if not any(gpu in str(run.get("device_kind")) for gpu in REFERENCE_GPUS):
        notes.append("not an H100/H200")
    if run.get("dirty"):
        notes.append("dirty tree")
    if run.get("smoke"):
        notes.append("smoke")
    if run.get("partial"):
        notes.append("partial run")
    if row.result.get("finite") is False:
        notes.append("NON-FINITE output")
    return f" ({', '.join(notes)})" if notes else ""


def _ratio(reference: Reference, seconds: float) -> str:
    parts = []
    if reference.eager_s is not None:
        parts.append(f"{reference.eager_s / seconds:.1f}x eager")
    if reference.compiled_s is not None:
        parts.append(f"{reference.compiled_s / seconds:.1f}x compiled")
    return ", ".join(parts) or "-"


def _ours(row: Row) -> str:
    r = row.result
    if row.key[0] == "train":
        mfu = "MFU pending" if r.get("mfu") is None else f"{100 * r['mfu']:.1f}% MFU"
        peak = (r.get("memory") or {}).get("peak_bytes")
        memory = "memory unknown" if peak is None else f"{peak / 1e9:.1f} GB"
        return f"{r['step_s']:.3f} s ({r['images_per_s']:.0f} img/s), {mfu}, {memory}"
    if row.key[1] == 1:
        return f"{r['s_per_batch']:.3f} s"
    return f"{r['s_per_batch']:.2f} s ({r['images_per_s']:.2f} img/s)"


def results_table(rows: Sequence[Row]) -> str:
    """The issue's table: workload, reference, target, ours, ratio, verdict, device, date, commit."""
    headline = {row.key: row for row in rows if not row.variant}
    lines = ["| Workload | Reference | Target | Ours | Ratio | Target met | Device | Date | Commit |",
             "|---|---|---|---|---|---|---|---|---|"]
    references = [(key, ref) for key, ref in SAMPLING.items()] + [(("train", 64), TRAINING)]
    for key, ref in references:
        row = headline.get(key)
        if row is None:
            lines.append(f"| {ref.label} | {ref.reference} | {ref.target} | pending | - | - | - | - | - |")
            continue
        try:
            met = "-" if ref.meets is None else ("yes" if ref.meets(row.result) else "**no**")
        except (KeyError, TypeError):  # a partial run's row, e.g. no MFU yet
            met = "-"
        run = row.run
        lines.append(f"| {ref.label} | {ref.reference} | {ref.target} | {_ours(row)} | "
                     f"{_ratio(ref, row.seconds)} | {met} | {run.get('device_kind')}{_flags(row)} | "
                     f"{str(run.get('date', '-'))[:10]} | {str(run.get('commit', '-'))[:7]} |")
    return "\n".join(lines)


def prediction_table(rows: Sequence[Row]) -> str:
    """Measured time against the kernel model's prediction, per timed program and settings."""
    lines = ["| Program | Settings | Measured | Predicted (kernel model) | Measured / predicted | File |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        model = row.result.get("kernel_model") or {}
        predicted = (model.get("program") or {}).get("predicted_s")
        cells = [f"{row.key[0]}, batch {row.key[1]}", row.variant or "default", f"{row.seconds:.4g} s"]
        cells += [f"{predicted:.4g} s", f"{row.seconds / predicted:.2f}"] if predicted else ["-", "-"]
        lines.append(f"| {' | '.join(cells)} | {row.path.name} |")
    return "\n".join(lines)


def default_paths() -> list[pathlib.Path]:
    patterns = ("sample_speed*.json", "train_speed*.json")
    return [pathlib.Path(p) for pattern in patterns for p in sorted(glob.glob(str(RESULTS_DIR / pattern)))]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="*", type=pathlib.Path,
                        help="sample_speed / train_speed JSONs (default: all of them in benchmarks/results/)")
    parser.add_argument("--allow-smoke", action="store_true", help="tabulate --smoke runs too")
    parser.add_argument("--out", type=pathlib.Path, help="also write the tables to this file")
    args = parser.parse_args(argv)
    paths = args.files or default_paths()
    if not paths:
        print(f"no sample_speed*.json or train_speed*.json in {RESULTS_DIR}: run the benchmarks first "
              "(docs/PERFORMANCE.md, 'Running the speed benchmarks on a GPU')", file=sys.stderr)
        return 1
    try:
        rows = load_rows(paths, args.allow_smoke)
    except ReportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    variants = sorted({row.variant for row in rows if row.variant})
    if variants:
        print(f"note: runs with {'; '.join(variants)} are only in the second table "
              "(the first takes default settings)", file=sys.stderr)
    text = f"{results_table(rows)}\n\n{prediction_table(rows)}\n"
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
