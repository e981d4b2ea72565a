"""What a user sees while training: a progress bar, metrics JSONL, TensorBoard.

Only process 0 writes (`enabled=False` elsewhere), so a multi-host run logs
once. Rows go to `workdir/metrics.jsonl` (one JSON object per line, with
`step`) and to TensorBoard event files under `workdir/tensorboard`.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import time
from typing import Any, Mapping

import numpy as np
import tqdm
from tqdm.contrib import logging as tqdm_logging

_LOG = logging.getLogger(__name__)


def truncate_rows(path: pathlib.Path, last_step: int) -> int:
    """Drops the rows of a metrics.jsonl after `last_step` (and an unfinished last line); returns those kept.

    A run resumed from an older checkpoint than its last logged row (it
    crashed between a checkpoint and the next) logs those steps again; the
    file then reads as one run. Rewritten through a temporary file.
    """
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
        if isinstance(row, dict) and row.get("step", 0) <= last_step:
            kept.append(line)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    temporary.replace(path)
    return len(kept)


class MetricsWriter:
    """Appends metric rows to metrics.jsonl and TensorBoard; a tqdm bar on stderr.

    On resume (`start_step` > 0), rows logged after `start_step` by the
    interrupted run are dropped first, since this run logs those steps again.

    Args:
      workdir: the run directory.
      num_steps: total steps of the run (the bar's length).
      start_step: the step the run starts (or resumes) from.
      batch_size: global images per step, for img/s.
      enabled: False on processes other than 0: every method is a no-op.
      progress_bar: show the tqdm bar.
    """

    def __init__(self, workdir: str | pathlib.Path, num_steps: int, start_step: int, batch_size: int,
                 enabled: bool = True, progress_bar: bool = True):
        self.enabled = enabled
        self.batch_size = batch_size
        self._last_time = time.perf_counter()
        self._last_step = self._start_step = start_step
        self._timing = False  # rates are measured from the end of the first step (which compiles)
        self._jsonl = None
        self._tb = None
        self._bar = None
        self._redirect = None
        if not enabled:
            return
        workdir = pathlib.Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "metrics.jsonl"
        if path.exists():
            truncate_rows(path, start_step)
        self._jsonl = open(path, "a", encoding="utf-8")
        from tensorboardX import SummaryWriter  # imported lazily: slow import, process 0 only

        # TensorBoard hides the earlier events past the step the run starts
        # from (a resume, or a restart before the first checkpoint): this run
        # logs those steps again.
        self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=start_step + 1)
        if progress_bar:
            self._bar = tqdm.tqdm(total=num_steps, initial=start_step, unit="step", dynamic_ncols=True)
            # Log records (a checkpoint saved, a caption cut by the input
            # pipeline's threads) are printed above the bar, not into its line.
            self._redirect = tqdm_logging.logging_redirect_tqdm()
            self._redirect.__enter__()

    def step_done(self, step: int) -> None:
        """Step `step` is under way and the one before it is finished: advances the bar to `step`."""
        if not self._timing and step >= self._start_step + 2:  # the compiling first step is done
            self._timing = True
            self._last_time, self._last_step = time.perf_counter(), step - 1
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
        """Writes one row; adds steps_per_sec and images_per_sec since the last row.

        The rates leave out the run's first step, which compiles: a row
        before `step_done` has seen it finish has none.

        Args:
          step: the optimizer step the metrics belong to.
          metrics: name -> scalar (numpy or Python).

        Returns:
          The row as written (floats), also on disabled writers.
        """
        now = time.perf_counter()
        elapsed = max(now - self._last_time, 1e-9)
        steps = max(step - self._last_step, 0) if self._timing else 0
        row = {name: float(np.asarray(value)) for name, value in metrics.items()}
        if steps:
            row["steps_per_sec"] = steps / elapsed
            row["images_per_sec"] = steps * self.batch_size / elapsed
        self._last_time, self._last_step = now, step
        if not self.enabled:
            return row
        self._append(step, row)
        shown = {"loss": row.get("loss", float("nan"))}
        if steps:
            shown.update(**{"step/s": row["steps_per_sec"], "img/s": row["images_per_sec"]})
        if self._bar is not None:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()})
        else:  # no bar (a batch job's log): one line a row
            _LOG.info("step %d: %s", step, ", ".join(f"{k} {v:.4g}" for k, v in shown.items()))
        return row

    def _append(self, step: int, row: Mapping[str, float]) -> None:
        """One metrics.jsonl line and one TensorBoard scalar per value, flushed."""
        self._jsonl.write(json.dumps({"step": step, **{k: _json_float(v) for k, v in row.items()}}) + "\n")
        self._jsonl.flush()
        for name, value in row.items():
            self._tb.add_scalar(name, value, step)
        self._tb.flush()

    def write_eval(self, step: int, metrics: Mapping[str, float], seconds: float) -> None:
        """Writes an evaluation's row (its own metrics.jsonl line at `step`) and leaves its
        `seconds` out of the next row's rates."""
        self._last_time += seconds
        if not self.enabled:
            return
        row = {name: float(value) for name, value in metrics.items()}
        self._append(step, row)
        message = ", ".join(f"{k} {row[k]:.4g}" for k in ("eval/loss", "eval_ema/loss") if k in row)
        if self._bar is not None:
            self._bar.write(f"step {step}: {message}")
        else:
            _LOG.info("step %d: %s", step, message)

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """Adds an (H, W, 3) uint8 image to TensorBoard."""
        if self.enabled:
            self._tb.add_image(name, image, step, dataformats="HWC")
            self._tb.flush()

    def close(self) -> None:
        """Closes the files and the bar."""
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None
        if self._bar is not None:
            self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


def ratio_metrics(mean: Mapping[str, float]) -> dict[str, float]:
    """Turns each `X_sum` / `X_count` pair of averaged metrics into `X` = sum / count.

    A pair whose count is 0 (no example of that kind in the window) gives no
    `X` at all rather than a made-up 0; other metrics pass through.
    """
    out = {}
    for key, value in mean.items():
        if key.endswith("_count") and key[: -len("_count")] + "_sum" in mean:
            continue
        if key.endswith("_sum") and key[: -len("_sum")] + "_count" in mean:
            name = key[: -len("_sum")]
            if mean[f"{name}_count"] > 0:
                out[name] = value / mean[f"{name}_count"]
            continue
        out[key] = value
    return out


def _json_float(value: float) -> float | str:
    """JSON has no NaN/inf; write them as strings so the line stays parseable."""
    return value if math.isfinite(value) else str(value)


def read_metrics(workdir: str | pathlib.Path) -> list[dict[str, Any]]:
    """Reads workdir/metrics.jsonl back as a list of rows."""
    path = pathlib.Path(workdir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
