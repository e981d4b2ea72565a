"""Exported model checkpoints: a directory with `config.json` and `params.npz`.

This is the hand-over format between the converter (released PyTorch
weights), training (EMA params) and sampling. It restores without building
the model: params are stored as a flat npz whose keys are "/"-joined Flax
paths, uncompressed float32, so a save/load round trip is bit-exact.

  directory/
    config.json      config.to_json(): every section of the ml_collections config
    params.npz       {"input_blocks_1_0/in_conv/kernel": float32 array, ...}
    tokenizer.model  only for text.tokenizer = "sentencepiece": a copy of the
                     trained model; config.json names it by this relative path

A relative `text.tokenizer_path` is looked up next to config.json first, so an
exported SentencePiece model travels with its directory.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import warnings
import zipfile
from typing import Any, Mapping

import flax.linen as nn
import jax
import ml_collections
import numpy as np
from flax import traverse_util

from glide_jax import config as config_lib

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.npz"
TOKENIZER_FILE = "tokenizer.model"
# Where an export came from (training workdir, step, EMA rate); written by glide_jax.train.
ORIGIN_FILE = "origin.json"
# A training workdir keeps the EMA export of its latest checkpoint here.
EXPORT_DIR = "export"
_SEP = "/"


class CheckpointError(ValueError):
    """An exported checkpoint is missing or malformed."""


def _tuples(value: Any) -> Any:
    """JSON has no tuples; configs use them for every sequence, so restore them."""
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def save_model(directory: str | pathlib.Path, config: ml_collections.ConfigDict,
               params: Mapping[str, Any], origin: Mapping[str, Any] | None = None) -> pathlib.Path:
    """Writes `config.json` and float32 `params.npz` into `directory`.

    Args:
      directory: created if needed; existing files of the same names are replaced.
      config: the full config the params belong to.
      params: the Flax params tree (with or without a top-level "params" key;
        logical-partitioning boxes are unboxed; arrays may be sharded).
      origin: JSON-able facts about where the params come from (training
        writes {"workdir", "step", "ema_rate"}), kept in `origin.json`; None
        removes an earlier model's.

    Returns:
      The directory path.
    """
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    params = nn.meta.unbox(dict(params))
    if set(params) == {"params"}:
        params = params["params"]
    flat = traverse_util.flatten_dict(params, sep=_SEP)
    arrays = {key: np.asarray(jax.device_get(value), dtype=np.float32) for key, value in flat.items()}
    config = _bundle_tokenizer(directory, config)
    (directory / CONFIG_FILE).write_text(config.to_json(indent=2, sort_keys=True) + "\n")
    tmp = directory / (PARAMS_FILE + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(directory / PARAMS_FILE)
    if origin is None:
        (directory / ORIGIN_FILE).unlink(missing_ok=True)
    else:
        tmp = directory / (ORIGIN_FILE + ".tmp")
        tmp.write_text(json.dumps(dict(origin), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        tmp.replace(directory / ORIGIN_FILE)
    return directory


def load_origin(directory: str | pathlib.Path) -> dict[str, Any] | None:
    """An export's `origin.json` (training workdir, step, EMA rate), or None if it has none or it is unreadable."""
    try:
        origin = json.loads((pathlib.Path(directory) / ORIGIN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return origin if isinstance(origin, dict) else None


def resolve_export(path: str | pathlib.Path) -> pathlib.Path:
    """An exported model directory, or the `export/` of the training workdir `path`.

    A workdir has a config.json of its own, so an export is recognised by its
    params file. A path holding neither is returned as given, for the loader
    to name.
    """
    path = pathlib.Path(path).expanduser()
    exported = path / EXPORT_DIR
    if not (path / PARAMS_FILE).is_file() and (exported / PARAMS_FILE).is_file():
        return exported
    return path


def missing_export_hint(path: str | pathlib.Path) -> str:
    """For a training workdir with no export (train.export_ema=False): how to write one; else ""."""
    path = pathlib.Path(path)
    if ((path / "checkpoints").is_dir() and not (path / PARAMS_FILE).is_file()
            and not (path / EXPORT_DIR / PARAMS_FILE).is_file()):
        if not any(p.name.isdigit() for p in (path / "checkpoints").iterdir()):
            return f"{path} is a training workdir that has saved no checkpoint yet: train it to its first"
        return (f"{path} is a training workdir with no {EXPORT_DIR}/ yet: training writes it at each checkpoint, "
                f"or run python -m glide_jax.train.export --workdir {path} --output {path / EXPORT_DIR}")
    return ""


def training_workdir_at(path: str | pathlib.Path) -> tuple[pathlib.Path, bool] | None:
    """The training workdir that `path` is, or lies inside the checkpoints of, with which of the two.

    Returns:
      (workdir, inside): inside is True for a path under `workdir/checkpoints/`;
      None if `path` is neither (a folder an export may be written to).
    """
    path = pathlib.Path(path)
    if (path / "checkpoints").is_dir():
        return path, False
    for parent in path.absolute().parents:
        if parent.name == "checkpoints" and (parent.parent / CONFIG_FILE).is_file():
            return parent.parent, True
    return None


def file_digest(path: str | pathlib.Path | None) -> str | None:
    """The SHA-256 of a file's bytes (a tokenizer's identity); the path itself if it cannot be read."""
    try:
        return hashlib.sha256(pathlib.Path(path).read_bytes()).hexdigest()
    except (OSError, TypeError):
        return None if path is None else str(path)


def _sentencepiece_path(config) -> str | None:
    text = config.get("text") if isinstance(config, ml_collections.ConfigDict) else None
    if text is None or text.get("tokenizer") != "sentencepiece":
        return None
    return text.get("tokenizer_path") or None


def _bundle_tokenizer(directory: pathlib.Path, config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config`, or a copy naming a SentencePiece model copied into `directory`.

    A checkpoint that names a tokenizer file elsewhere could only be sampled
    where that path exists, from the working directory training ran in. If
    the file is missing now, the path is kept as it is, with a warning.
    """
    source = _sentencepiece_path(config)
    if source is None:
        return config
    target = directory / TOKENIZER_FILE
    if not pathlib.Path(source).is_file():
        warnings.warn(f"config.text.tokenizer_path = {source!r} does not exist, so the checkpoint in {directory} "
                      "holds no copy of its tokenizer: sampling it needs that file at that path", stacklevel=3)
        return config
    if not (target.exists() and target.samefile(source)):
        tmp = directory / (TOKENIZER_FILE + ".tmp")
        shutil.copyfile(source, tmp)
        tmp.replace(target)
    config = config.copy_and_resolve_references()
    config.text.tokenizer_path = TOKENIZER_FILE
    return config


def load_config(directory: str | pathlib.Path) -> ml_collections.ConfigDict:
    """Reads only `config.json` of an exported checkpoint.

    The saved values are laid over `config.base_config()`, so the result is
    typed like a config built from `configs/`: a field saved as null keeps its
    type (a `--config.x=...` override can set it), and a key added to the
    defaults after the file was written gets its default. A relative
    SentencePiece `text.tokenizer_path` naming a file beside config.json
    (as `save_model` writes it) becomes that file's path.
    """
    path = pathlib.Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"exported checkpoint config {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    config = config_lib.base_config()
    try:
        config.update(_tuples(raw))
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(f"{path} does not fit the config's types: {exc}") from exc
    tokenizer = _sentencepiece_path(config)
    if tokenizer is not None and not pathlib.Path(tokenizer).is_absolute():
        beside = pathlib.Path(directory) / tokenizer
        if beside.is_file():
            config.text.tokenizer_path = str(beside)
    return config


def load_model(directory: str | pathlib.Path) -> tuple[ml_collections.ConfigDict, dict]:
    """Reads an exported checkpoint written by `save_model` (or a training workdir's export).

    Returns:
      (config, params) where params is the nested Flax params tree (no
      "params" wrapper: `model.apply({"params": params}, ...)`) of float32
      numpy arrays.
    """
    directory = pathlib.Path(directory).expanduser()
    if directory.is_file():
        raise CheckpointError(f"{directory} is a file: pass the exported checkpoint's folder, {directory.parent}")
    if not directory.is_dir():
        raise CheckpointError(f"exported checkpoint directory {directory} does not exist")
    hint = missing_export_hint(directory)
    if hint:
        raise CheckpointError(hint)
    directory = resolve_export(directory)
    config = load_config(directory)
    path = directory / PARAMS_FILE
    if not path.is_file():
        raise CheckpointError(f"exported checkpoint params {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # truncated or not an .npz
        raise CheckpointError(f"exported checkpoint params {path} cannot be read ({exc}); "
                              f"it may be truncated: export it again") from None
    return config, traverse_util.unflatten_dict(flat, sep=_SEP)
