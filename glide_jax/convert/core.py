"""Loads PyTorch state dicts and maps them onto a Flax parameter tree.

The mapping is strict: every checkpoint key must be consumed and every Flax
parameter filled with an array of exactly the expected shape, otherwise
`ConversionError` lists the missing keys, the unexpected keys and the shape
mismatches together. Model-specific name tables (`convert/unet.py`,
`convert/clip.py`) supply a `rule(torch_key) -> Target | None`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import pickle
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

Path = tuple[str, ...]


class ConversionError(ValueError):
    """A checkpoint cannot be read or does not match the model."""


@dataclasses.dataclass(frozen=True)
class Target:
    """Where one checkpoint array goes and how its layout changes.

    Attributes:
      path: key path in the Flax `params` tree, e.g. ("input_blocks_1_0", "in_conv", "kernel").
      transform: maps the torch array to the Flax layout (e.g. OIHW -> HWIO).
    """

    path: Path
    transform: Callable[[np.ndarray], np.ndarray] = lambda a: a


def identity(array: np.ndarray) -> np.ndarray:
    """Same layout in both frameworks (biases, norms, embeddings)."""
    return array


def linear_kernel(array: np.ndarray) -> np.ndarray:
    """torch Linear weight (out, in) -> Flax Dense kernel (in, out)."""
    _expect_ndim(array, 2, "Linear weight (out, in)")
    return array.T


def conv1x1_kernel(array: np.ndarray) -> np.ndarray:
    """torch Conv1d weight (out, in, 1) -> Flax Dense kernel (in, out)."""
    _expect_ndim(array, 3, "Conv1d weight (out, in, 1)")
    if array.shape[2] != 1:
        raise ConversionError(f"Conv1d weight of shape {array.shape} has kernel size {array.shape[2]}, expected 1")
    return array[:, :, 0].T


def conv2d_kernel(array: np.ndarray) -> np.ndarray:
    """torch Conv2d weight (out, in, kh, kw) -> Flax Conv kernel (kh, kw, in, out)."""
    _expect_ndim(array, 4, "Conv2d weight (out, in, kh, kw)")
    return array.transpose(2, 3, 1, 0)


def _expect_ndim(array: np.ndarray, ndim: int, what: str) -> None:
    if array.ndim != ndim:
        raise ConversionError(f"expected a {what}, got shape {array.shape}")


def _to_numpy(value: Any, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; bfloat16 has no numpy dtype
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray):
        return value
    raise ConversionError(f"checkpoint entry {key!r} is a {type(value).__name__}, not an array")


def _load_torch(path: pathlib.Path) -> Mapping[str, Any]:
    try:
        import torch  # optional dependency: pip install glide-jax[convert]
    except ImportError as exc:
        raise ConversionError(f"reading {path} needs PyTorch (pip install 'glide-jax[convert]')") from exc
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise ConversionError(
            f"refusing to load {path}: it is not a plain tensor state dict (the pickle references "
            f"objects outside torch's weights-only allowlist, which could run code). "
            f"Details: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
    except (RuntimeError, EOFError, OSError) as exc:
        raise ConversionError(f"cannot read {path} as a PyTorch checkpoint: {exc}") from exc
    return state


def load_state(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Reads a flat {name: array} checkpoint from `.npz` or `.pt`.

    `.pt` files go through `torch.load(weights_only=True)`, which refuses
    pickles that would construct arbitrary objects (and so run code).

    Args:
      path: a `.npz` (no pickled objects allowed) or `.pt`/`.pth` file.

    Returns:
      Ordered dict of name -> numpy array (floating tensors as float32).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except ValueError as exc:
            raise ConversionError(f"refusing to load {path}: {exc}") from exc
    if path.suffix in (".pt", ".pth", ".bin"):
        state = _load_torch(path)
        if not isinstance(state, Mapping):
            raise ConversionError(f"{path} holds a {type(state).__name__}, expected a state dict")
        return {str(key): _to_numpy(value, key) for key, value in state.items()}
    raise ConversionError(f"unsupported checkpoint type {path.suffix!r} for {path}: use .pt or .npz")


def param_template(model: nn.Module, inputs: Mapping[str, Any]) -> dict[Path, jax.ShapeDtypeStruct]:
    """Flat {path: ShapeDtypeStruct} of `model`'s params, via `jax.eval_shape`."""
    variables = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), **inputs))
    return traverse_util.flatten_dict(nn.meta.unbox(variables)["params"])


SHOWN = 10  # entries of each problem list in an error message


def _listed(items: list[str], separator: str) -> str:
    shown = separator.join(items[:SHOWN])
    return shown + (f"{separator}... and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _format_problems(missing, unexpected, mismatched) -> str:
    lines = ["checkpoint does not match the model:"]
    if missing:
        lines.append(f"  missing ({len(missing)} Flax params without a checkpoint key): "
                     + _listed(["/".join(p) for p in missing], ", "))
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)} checkpoint keys the model has no place for): "
                     + _listed(list(unexpected), ", "))
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): " + _listed(list(mismatched), "; "))
    if mismatched or (missing and unexpected):
        lines.append("  (a checkpoint of another size or kind: check --kind, and pass the model's "
                     "glide-text2im options with --options)")
    return "\n".join(lines)


def convert_state(state: Mapping[str, np.ndarray], template: Mapping[Path, Any],
                  rule: Callable[[str], Target | None]) -> dict:
    """Maps a flat torch state dict onto a Flax params tree, strictly.

    Args:
      state: {torch_name: array}.
      template: flat {flax_path: object with .shape} (see `param_template`).
      rule: torch_name -> Target, or None for a name the model does not know.

    Returns:
      Nested {name: ... float32 np.ndarray} params tree (no "params" wrapper).

    Raises:
      ConversionError: listing missing keys, unexpected keys and shape
        mismatches (all of them, not only the first).
    """
    filled: dict[Path, np.ndarray] = {}
    targeted: set[Path] = set()  # paths some key aimed at, even if its shape was wrong
    unexpected, mismatched = [], []
    for key, value in state.items():
        target = rule(key)
        if target is None or target.path not in template:
            unexpected.append(key)
            continue
        targeted.add(target.path)
        expected = tuple(template[target.path].shape)
        try:
            array = np.asarray(target.transform(np.asarray(value)), dtype=np.float32)
        except ConversionError as exc:
            mismatched.append(f"{key} {tuple(np.shape(value))}: {exc}")
            continue
        if array.shape != expected:
            mismatched.append(f"{key} {tuple(np.shape(value))} -> {'/'.join(target.path)} "
                              f"is {array.shape}, model expects {expected}")
            continue
        if target.path in filled:
            mismatched.append(f"{key}: {'/'.join(target.path)} was already filled by another key")
            continue
        filled[target.path] = np.ascontiguousarray(array)
    missing = [path for path in template if path not in targeted]
    if missing or unexpected or mismatched:
        raise ConversionError(_format_problems(missing, unexpected, mismatched))
    return traverse_util.unflatten_dict(filled)
