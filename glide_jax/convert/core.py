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
import warnings
import zipfile
from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

Path = tuple[str, ...]


class ConversionError(ValueError):
    """A checkpoint cannot be read or does not match the model."""


class CheckpointMismatch(ConversionError):
    """The checkpoint's keys or shapes do not fit the model built from the config.

    Attributes:
      another_size: some shapes differ, or keys are both missing and
        unexpected: most likely a checkpoint of another size or kind than the
        config describes (rather than a damaged one).
    """

    def __init__(self, message: str, *, another_size: bool):
        super().__init__(message)
        self.another_size = another_size


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


# Lines of torch's weights-only error that are advice, not the reason (its advice to
# retry with weights_only=False is exactly what this converter must not do).
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation")
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip archive (an empty one starts with its end record)
_NPY_MAGIC = b"\x93NUMPY"


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message, cut after its first sentence when long."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    line = lines[0] if lines else type(exc).__name__
    end = line.find(". ", 40)
    return line[:end + 1] if len(line) > limit and end > 0 else line


def _unpickler_reason(exc: pickle.UnpicklingError) -> str:
    """What torch's weights-only unpickler objected to, without its advice."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith(_TORCH_BOILERPLATE)]
    reason = " ".join(lines).replace("WeightsUnpickler error:", "").strip().rstrip(".")
    return reason or type(exc).__name__


def _load_torch(path: pathlib.Path) -> Any:
    try:
        import torch  # optional dependency: pip install glide-jax[convert]
    except ImportError as exc:
        raise ConversionError(f"reading {path} needs PyTorch (pip install 'glide-jax[convert]')") from exc
    unreadable = f"cannot read {path} as a PyTorch checkpoint"
    try:
        with warnings.catch_warnings():  # its pickle-protocol notes would precede our one error line
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "GLOBAL" in reason:  # a pickle that builds objects outside torch's allowlist
            raise ConversionError(
                f"refusing to load {path}: it is not a plain tensor state dict ({reason}); a pickle that "
                "builds arbitrary objects could run code, so it is never loaded") from None
        raise ConversionError(f"{unreadable}: it is not a torch.save file, or it is corrupt ({reason})") from None
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError... on bad bytes
        raise ConversionError(f"{unreadable}: it is not a torch.save file, or it is corrupt "
                              f"({type(exc).__name__}: {_first_line(exc)})") from None


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
    with open(path, "rb") as file:
        magic = file.read(len(_NPY_MAGIC))
    if magic.startswith(_NPY_MAGIC):
        raise ConversionError(f"{path} is a single .npy array, not an .npz of named arrays")
    if not magic.startswith(_ZIP_MAGIC):
        raise ConversionError(f"{path} is not a readable .npz (it is not a zip archive of arrays)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc):  # an object array: numpy would have to unpickle it
            raise ConversionError(f"refusing to load {path}: it holds pickled Python objects, which could "
                                  "run code") from None
        raise ConversionError(f"{path} is not a readable .npz ({_first_line(exc)}); it may be truncated") from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ConversionError(f"{path} is not a readable .npz ({_first_line(exc)}); it may be truncated") from None


_SUFFIXES = (".npz", ".pt", ".pth", ".bin")


def _check_file(path: pathlib.Path) -> None:
    if path.is_dir():
        raise ConversionError(f"checkpoint {path} is a directory: pass the .pt or .npz file itself")
    if not path.is_file():
        raise ConversionError(f"checkpoint {path} does not exist")
    if path.suffix.lower() not in _SUFFIXES:
        raise ConversionError(f"unsupported checkpoint type {path.suffix!r} for {path}: use .pt or .npz")
    if path.stat().st_size == 0:
        raise ConversionError(f"cannot read checkpoint {path}: the file is empty")


def load_state(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    """Reads a flat {name: array} checkpoint from `.npz` or `.pt`.

    `.pt` files go through `torch.load(weights_only=True)`, which refuses
    pickles that would construct arbitrary objects (and so run code). The
    suffix is matched case-insensitively.

    Args:
      path: a `.npz` (no pickled objects allowed) or `.pt`/`.pth`/`.bin` file.

    Returns:
      Ordered dict of name -> numpy array (floating tensors as float32).

    Raises:
      ConversionError: one line saying why the file cannot be used (absent,
        a directory, empty, truncated, not a checkpoint, or unsafe).
    """
    path = pathlib.Path(path)
    _check_file(path)
    if path.suffix.lower() == ".npz":
        return _load_npz(path)
    state = _load_torch(path)
    if not isinstance(state, Mapping):
        raise ConversionError(f"{path} holds a {type(state).__name__}, expected a state dict")
    return {str(key): _to_numpy(value, key) for key, value in state.items()}


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
      CheckpointMismatch: listing missing keys, unexpected keys and shape
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
        raise CheckpointMismatch(_format_problems(missing, unexpected, mismatched),
                                 another_size=bool(mismatched or (missing and unexpected)))
    return traverse_util.unflatten_dict(filled)
