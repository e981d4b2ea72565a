"""Where a converted checkpoint goes: what `--output` may replace, and an all-or-nothing write.

A conversion is read, mapped and checked in memory first; only then are the
files written, into a temporary folder inside `--output` and moved over the
old ones with `os.replace`, so a failure at any point leaves the folder as it
was (no config.json without its params.npz).

What an `--output` may already hold:
  - a training workdir (it holds checkpoints/): never replaced, even with force;
  - the same network (same kind, same network config): converted again;
  - the other encoder of a CLIP of the same `clip` config: kept and merged,
    with or without force;
  - anything else: replaced only with force.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import ml_collections

from glide_jax import checkpoints
from glide_jax import config as config_lib
from glide_jax.convert import core

_TEMP_PREFIX = ".convert-"  # write_model's temporary folder inside --output
ENCODERS = {"clip-image": "image_encoder", "clip-text": "text_encoder"}  # --kind -> CLIP params key


def _refuse_training_workdir(output: pathlib.Path) -> None:
    run = checkpoints.training_workdir_at(output)
    if run is not None and not run[1]:
        raise core.ConversionError(
            f"--output {output} is a training workdir (it holds checkpoints/): converting there would replace "
            f"its config.json, with or without --force; use a folder of its own")
    if run is not None:
        raise core.ConversionError(
            f"--output {output} is inside the checkpoints of the training workdir {run[0]}, where rotating old "
            "steps would delete it; use a folder of its own")


def _network(config: ml_collections.ConfigDict) -> dict:
    """What decides the converted params: the `clip` section of a CLIP, else every network section."""
    if config.model.kind == "clip":
        return {"kind": "clip", "clip": config.clip.to_dict()}
    sections = {name: config[name].to_dict() for name in config_lib.NETWORK_SECTIONS}
    sections["text"].pop("tokenizer_path", None)
    return sections


def _describe(old: ml_collections.ConfigDict | None, config: ml_collections.ConfigDict) -> str:
    if old is None:
        return "an unreadable config.json"
    if old.model.kind != config.model.kind:
        return f"a {old.model.kind!r} checkpoint"
    other = " of another CLIP config" if old.model.kind == "clip" else " of another configuration"
    return f"a {old.model.kind!r} checkpoint{other}"


def _other_encoder(output: pathlib.Path, kind: str, force: bool) -> dict:
    """The params of the CLIP encoder this run does not convert, from `output` ({} if it has none)."""
    if not (output / checkpoints.PARAMS_FILE).is_file():
        return {}
    try:
        _, old_params = checkpoints.load_model(output)
    except checkpoints.CheckpointError as exc:
        if force:
            return {}
        raise core.ConversionError(f"--output {output} holds a CLIP whose other encoder cannot be read ({exc}); "
                                   "pass --force to replace it") from None
    return {key: value for key, value in old_params.items()
            if key in ENCODERS.values() and key != ENCODERS[kind]}


def check_output(output: pathlib.Path, kind: str, config: ml_collections.ConfigDict, force: bool) -> dict:
    """Decides whether `output` may take the conversion (see the module docstring).

    Args:
      output: the --output folder.
      kind: the --kind.
      config: the config the checkpoint is converted with.
      force: replace another checkpoint.

    Returns:
      Params to keep beside the new ones: the other CLIP encoder, or {}.

    Raises:
      core.ConversionError: naming what `output` holds and why it is not replaced.
    """
    _refuse_training_workdir(output)
    if output.exists() and not output.is_dir():
        raise core.ConversionError(f"--output {output} is a file, not a folder")
    if not (output / checkpoints.CONFIG_FILE).is_file():
        return {}
    try:
        old = checkpoints.load_config(output)
        same = _network(old) == _network(config)
    except (checkpoints.CheckpointError, KeyError, AttributeError):
        old, same = None, False
    if same:
        return _other_encoder(output, kind, force) if kind in ENCODERS else {}
    if force:
        return {}
    raise core.ConversionError(f"--output {output} already holds {_describe(old, config)}; choose another "
                               "--output, or pass --force to replace it")


def write_model(output: pathlib.Path, config: ml_collections.ConfigDict, params: dict) -> None:
    """Writes config.json + params.npz into `output`, all or nothing.

    `checkpoints.save_model` writes into a temporary folder inside `output`;
    the files are then moved over the old ones, config.json last, and a stale
    origin.json (an earlier training export's) is removed. A folder this call
    created is removed again if the write fails. Temporary folders left by a
    conversion that was killed mid-write (they may hold gigabytes of partial
    params.npz) are removed first.
    """
    created = not output.exists()
    output.mkdir(parents=True, exist_ok=True)
    for leftover in output.glob(f"{_TEMP_PREFIX}*"):
        if leftover.is_dir() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)
    try:
        with tempfile.TemporaryDirectory(dir=output, prefix=_TEMP_PREFIX) as tmp:
            checkpoints.save_model(tmp, config, params)
            for path in sorted(pathlib.Path(tmp).iterdir(), key=lambda p: p.name == checkpoints.CONFIG_FILE):
                os.replace(path, output / path.name)
        (output / checkpoints.ORIGIN_FILE).unlink(missing_ok=True)
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise
