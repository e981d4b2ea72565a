"""Fine-tuning from a trained model (config.train.init_from), GLIDE §4.3.

GLIDE made its inpainting models by fine-tuning the text-to-image models with
four extra input channels (the known RGB pixels and the mask). Here every
parameter whose path and shape match is copied from the source model; a
convolution kernel that only gained input channels gets the source weights in
its first channels and zeros in the new ones, so at the start of fine-tuning
the network computes exactly what the source model did. Anything else that
does not fit is an error that lists the parameters.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import numpy as np

from glide_jax import checkpoints


class InitFromError(ValueError):
    """config.train.init_from does not fit the configured model."""


def resolve_init_from(path: str | pathlib.Path) -> pathlib.Path:
    """An exported model directory, or a training workdir (its latest EMA export).

    Raises:
      InitFromError: if neither `path/export` nor `path` holds config.json + params.npz.
    """
    path = pathlib.Path(path)
    # A workdir has a config.json of its own; only a directory with params is an export.
    for candidate in (path / "export", path):
        if (candidate / checkpoints.PARAMS_FILE).exists() and (candidate / checkpoints.CONFIG_FILE).exists():
            return candidate
    raise InitFromError(f"config.train.init_from = {str(path)!r}: no exported model there "
                        f"(expected config.json + params.npz, or export/ of a training workdir)")


def _flatten(tree: Any) -> dict[str, Any]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)] = leaf
    return flat


def _fit(name: str, target_shape: tuple[int, ...], source: np.ndarray) -> np.ndarray | None:
    """The source value reshaped for the target, or None if it cannot be."""
    if tuple(source.shape) == target_shape:
        return source
    grows_inputs = (len(target_shape) == 4 and source.ndim == 4 and target_shape[:2] == source.shape[:2]
                    and target_shape[3] == source.shape[3] and target_shape[2] > source.shape[2])
    if grows_inputs:  # HWIO kernel with new input channels: they start at zero
        padded = np.zeros(target_shape, source.dtype)
        padded[:, :, : source.shape[2], :] = source
        return padded
    return None


def merge_pretrained(params: Any, pretrained: Any) -> Any:
    """Copies `pretrained` into a freshly initialised `params` tree.

    Args:
      params: the new model's parameters (any sharding; only shapes are read).
      pretrained: the source model's parameters (host or device arrays).

    Returns:
      A tree like `params` of numpy float32 arrays.

    Raises:
      InitFromError: listing parameters missing from the source or of a shape
        that cannot be adapted.
    """
    source = {name: np.asarray(value) for name, value in _flatten(pretrained).items()}
    leaves, treedef = jax.tree_util.tree_flatten(params)
    names = list(_flatten(params))
    merged, problems = [], []
    for name, leaf in zip(names, leaves):
        if name not in source:
            problems.append(f"{name}: not in the source model")
            continue
        fitted = _fit(name, tuple(leaf.shape), source[name])
        if fitted is None:
            problems.append(f"{name}: source {tuple(source[name].shape)} -> model {tuple(leaf.shape)}")
        merged.append(fitted)
    if problems:
        raise InitFromError("config.train.init_from does not fit the configured model:\n  "
                            + "\n  ".join(problems[:40]))
    return jax.tree_util.tree_unflatten(treedef, [m.astype(np.float32) for m in merged])


def load_pretrained(path: str | pathlib.Path) -> Any:
    """The params of the exported model at `path` (see `resolve_init_from`)."""
    _, params = checkpoints.load_model(resolve_init_from(path))
    return params
