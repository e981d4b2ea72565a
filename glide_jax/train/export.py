"""Exports EMA params of a training run for sample.py (glide_jax.checkpoints format).

    python -m glide_jax.train.export --workdir DIR --output OUT [--ema-rate R] [--step S] [--force]

reads `DIR/config.json` and the latest (or given) checkpoint, and writes
`OUT/config.json` + `OUT/params.npz` with `glide_jax.checkpoints.save_model`.
`--ema-rate` picks one of `config.optim.ema_rates` (default: the first);
`--ema-rate 0` exports the raw (non-averaged) params. The training loop also
keeps `DIR/export` up to date with the first rate at every checkpoint.
`OUT` may already hold an export of the same network (a later step replaces
an earlier one); another model there is only replaced with `--force`, and a
training workdir never.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from typing import Any, Sequence

import jax
import ml_collections
import orbax.checkpoint as ocp

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax import sharding as sharding_lib
from glide_jax.models import factory
from glide_jax.train import checkpointing, optim, runtime
from glide_jax.train import state as state_lib

EXPORT_DIR = checkpoints.EXPORT_DIR


def ema_params_for_rate(state: Any, rates: Sequence[float], rate: float | None) -> Any:
    """The EMA tree for `rate` (None: the first rate; 0: the raw params).

    Raises:
      ValueError: naming the available rates if `rate` is not among them.
    """
    if rate is None:
        return state.ema_params[0]
    if rate == 0:
        return state.params
    return state.ema_params[_rate_index(rates, rate)]


def _rate_index(rates: Sequence[float], rate: float) -> int:
    for index, candidate in enumerate(rates):
        if abs(float(candidate) - float(rate)) < 1e-12:
            return index
    raise ValueError(f"--ema-rate {rate}: the run tracks config.optim.ema_rates = {tuple(rates)} (or 0 for raw)")


def write_export(output: str | pathlib.Path, config: ml_collections.ConfigDict, params: Any, *,
                 workdir: str | pathlib.Path, step: int, ema_rate: float) -> pathlib.Path:
    """Gathers `params` to the host and saves them with their config (process 0 writes).

    `origin.json` records the training `workdir`, the checkpoint `step` and
    the `ema_rate` (0: the raw parameters) the params come from.
    """
    host_params = runtime.gather_to_host(params)
    if jax.process_index() != 0:
        return pathlib.Path(output)
    origin = {"workdir": str(pathlib.Path(workdir).absolute()), "step": int(step), "ema_rate": float(ema_rate)}
    return checkpoints.save_model(output, config, host_params, origin=origin)


def check_output(output: str | pathlib.Path, config: ml_collections.ConfigDict, force: bool = False) -> None:
    """Refuses an `output` that would overwrite a training run, or another model without `force`.

    Raises:
      FileExistsError: naming what `output` holds.
    """
    output = pathlib.Path(output)
    run = checkpoints.training_workdir_at(output)
    if run is not None and not run[1]:
        raise FileExistsError(f"--output {output} is a training workdir (it holds checkpoints/): exporting there "
                              f"would replace its config.json; use a folder of its own, e.g. {output / EXPORT_DIR}")
    if run is not None:
        raise FileExistsError(f"--output {output} is inside the checkpoints of the training workdir {run[0]}, "
                              f"where rotating old steps would delete it; use a folder of its own, e.g. "
                              f"{run[0] / EXPORT_DIR}")
    if force or not (output / checkpoints.CONFIG_FILE).is_file():
        return
    try:
        old = checkpoints.load_config(output)
        same = _network(old) == _network(config)
        what = f"a {old.model.kind!r} model"
    except (checkpoints.CheckpointError, KeyError):
        same, what = False, "an unreadable config.json"
    if not same:
        raise FileExistsError(f"--output {output} already holds {what} of another configuration; choose another "
                              "--output, or pass --force to replace it")


def _network(config: ml_collections.ConfigDict) -> dict:
    """The network sections, less where the tokenizer file lies (an export keeps its own copy)."""
    sections = {name: config[name].to_dict() for name in config_lib.NETWORK_SECTIONS}
    sections["text"].pop("tokenizer_path", None)
    return sections


def _pick(tree: Any, rates: Sequence[float], rate: float | None, *, placeholder: Any) -> Any:
    """`tree` (a TrainState) with every leaf outside the exported subtree replaced by `placeholder`."""
    def hide(subtree):
        return jax.tree_util.tree_map(lambda _: placeholder, subtree)

    kept = ema_params_for_rate(tree, rates, rate)
    hidden = hide(tree)
    if rate == 0:
        return hidden.replace(params=kept)
    index = 0 if rate is None else _rate_index(rates, rate)
    ema = list(hidden.ema_params)
    ema[index] = kept
    return hidden.replace(ema_params=tuple(ema))


def export_from_workdir(workdir: str | pathlib.Path, output: str | pathlib.Path, ema_rate: float | None = None,
                        step: int | None = None, force: bool = False) -> pathlib.Path:
    """Restores the chosen parameters of a training checkpoint and writes them to `output`.

    Only that one tree is read, into host memory (the CPU device), whatever
    the run's mesh: the optimizer moments and the other EMA trees (three to
    four times the parameters) are neither read nor allocated, and no
    accelerator memory is used, so a paper-size run exports on any machine
    with the model's size in RAM.

    Args:
      workdir: a training run directory (with config.json and checkpoints/).
      output: the export directory.
      ema_rate: see `ema_params_for_rate`.
      step: checkpoint step; None for the latest.
      force: replace another model in `output` (see `check_output`).

    Returns:
      The output directory.
    """
    workdir = pathlib.Path(workdir)
    if not (workdir / "checkpoints").is_dir():
        raise FileNotFoundError(f"--workdir {workdir} is not a training workdir (no checkpoints/ in it)")
    config = checkpoints.load_config(workdir)
    check_output(output, config, force)
    rates = config.optim.ema_rates
    if ema_rate not in (None, 0):
        _rate_index(rates, ema_rate)  # a wrong rate fails before the restore
    ckpt = checkpointing.Checkpointer(workdir, keep=int(config.train.keep_checkpoints), async_save=False)
    try:
        saved = sorted(ckpt.manager.all_steps())
        if not saved:
            raise FileNotFoundError(f"no checkpoint under {workdir / 'checkpoints'}")
        if step is not None and step not in saved:
            raise FileNotFoundError(f"--step {step}: no such checkpoint under {workdir / 'checkpoints'}; "
                                    f"it holds steps {', '.join(map(str, saved))}")
        local = config.copy_and_resolve_references()
        local.mesh.data, local.mesh.fsdp, local.mesh.tensor = 1, 1, 1
        mesh = sharding_lib.create_mesh(local.mesh, jax.devices("cpu")[:1])
        _, abstract = state_lib.abstract_train_state(local, factory.create_model(config),
                                                     optim.create_optimizer(local), factory.example_inputs(local, 1),
                                                     mesh)
        wanted = _pick(abstract, rates, ema_rate, placeholder=ocp.PLACEHOLDER)
        step = saved[-1] if step is None else step
        state = ckpt.restore_part(step, wanted)
    finally:
        ckpt.close()
    return write_export(output, config, ema_params_for_rate(state, rates, ema_rate), workdir=workdir, step=step,
                        ema_rate=rates[0] if ema_rate is None else ema_rate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m glide_jax.train.export", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="training run directory")
    parser.add_argument("--output", required=True, help="directory for config.json + params.npz")
    parser.add_argument("--ema-rate", type=float, default=None, help="EMA rate to export; 0 = raw params")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    parser.add_argument("--force", action="store_true", help="replace another model already in --output")
    args = parser.parse_args(argv)
    try:
        out = export_from_workdir(args.workdir, args.output, args.ema_rate, args.step, args.force)
    except (checkpoints.CheckpointError, config_lib.ConfigError, checkpointing.UnreadableCheckpoint, OSError,
            ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.workdir} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
