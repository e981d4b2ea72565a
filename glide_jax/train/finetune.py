"""Fine-tuning from a trained model (config.train.init_from), GLIDE §4.3.

GLIDE made its inpainting models by fine-tuning the text-to-image models with
four extra input channels (the known RGB pixels and the mask). Here every
parameter whose path and shape match is copied from the source model. The
first convolution's kernel is rebuilt by input (`unet.INPUT_LAYOUT`): each
input the source model had keeps its weights, wherever the new kind puts it
(an upsampler's `low_res` moves from channels 3:6 to 7:10 in the inpainting
upsampler), and the new inputs start at zero, so at the start of fine-tuning
the network computes exactly what the source model did. Anything else that
does not fit is an error that lists the parameters. Settings that change what
the copied parameters compute while keeping their shapes (head counts, the
tokenizer, the noise schedule) are compared separately and warned about
(`function_differences`).
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import ml_collections
import numpy as np

from glide_jax import checkpoints
from glide_jax.models import unet


FIRST_CONV = "input_blocks_0_0/kernel"  # the U-Net's input convolution (HWIO)

# Settings that change what a parameter computes but not its shape, so the
# shape checks of `merge_pretrained` cannot see them (per model family).
UNET_FUNCTION_KEYS = ("model.num_heads", "model.num_head_channels", "model.num_heads_upsample",
                      "model.norm_groups", "text.xf_heads", "text.tokenizer",
                      "diffusion.noise_schedule", "diffusion.steps")
CLIP_FUNCTION_KEYS = ("clip.n_head_image", "clip.n_head_state_image", "clip.n_head_text",
                      "clip.n_head_state_text", "diffusion.noise_schedule", "diffusion.steps")


class InitFromError(ValueError):
    """config.train.init_from does not fit the configured model."""


def resolve_init_from(path: str | pathlib.Path) -> pathlib.Path:
    """An exported model directory, or a training workdir (its latest EMA export).

    Raises:
      InitFromError: if neither `path/export` nor `path` holds config.json + params.npz.
    """
    found = checkpoints.resolve_export(path)
    if (found / checkpoints.PARAMS_FILE).is_file() and (found / checkpoints.CONFIG_FILE).is_file():
        return found
    hint = checkpoints.missing_export_hint(path)
    raise InitFromError(f"config.train.init_from = {str(path)!r}: "
                        + (hint or "no exported model there (expected config.json + params.npz, or export/ of "
                                   "a training workdir)"))


def _flatten(tree: Any) -> dict[str, Any]:
    flat = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        flat["/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)] = leaf
    return flat


def _first_conv(target_shape: tuple[int, ...], source: np.ndarray, source_kind: str,
                target_kind: str) -> np.ndarray:
    """The source's input-conv kernel laid out for `target_kind`'s inputs, new ones at zero."""
    source_layout, target_layout = unet.INPUT_LAYOUT[source_kind], unet.INPUT_LAYOUT[target_kind]
    dropped = [name for name, _ in source_layout if name not in dict(target_layout)]
    if dropped:
        raise InitFromError(f"config.train.init_from: a {source_kind!r} model cannot initialise a "
                            f"{target_kind!r} model, which has no {', '.join(dropped)} input")
    if source.shape[2] != unet.IN_CHANNELS[source_kind] or target_shape[2] != unet.IN_CHANNELS[target_kind]:
        raise InitFromError(f"{FIRST_CONV}: source {tuple(source.shape)} ({source_kind!r}) -> model "
                            f"{target_shape} ({target_kind!r}) do not have the kinds' input channels")
    if source.shape[:2] + source.shape[3:] != target_shape[:2] + target_shape[3:]:
        raise InitFromError(f"{FIRST_CONV}: source {tuple(source.shape)} -> model {target_shape}")

    def offsets(layout):
        starts = np.cumsum([0] + [width for _, width in layout])
        return {name: (int(start), int(start) + width) for (name, width), start in zip(layout, starts)}

    source_at = offsets(source_layout)
    kernel = np.zeros(target_shape, source.dtype)
    for name, (start, stop) in offsets(target_layout).items():
        if name in source_at:
            kernel[:, :, start:stop] = source[:, :, slice(*source_at[name])]
    return kernel


def merge_pretrained(params: Any, pretrained: Any, *, source_kind: str, target_kind: str) -> Any:
    """Copies `pretrained` into a freshly initialised `params` tree.

    Args:
      params: the new model's parameters (any sharding; only shapes are read).
      pretrained: the source model's parameters (host or device arrays).
      source_kind, target_kind: the two models' `config.model.kind`. When
        they differ (both U-Net kinds), the input convolution is re-laid out
        by input, with the target's new inputs at zero.

    Returns:
      A tree like `params` of numpy float32 arrays.

    Raises:
      InitFromError: listing parameters missing from the source, source
        parameters the model has no place for (a shallower text encoder, say)
        and shapes that cannot be adapted.
    """
    remap = source_kind != target_kind
    if remap and not (source_kind in unet.INPUT_LAYOUT and target_kind in unet.INPUT_LAYOUT):
        raise InitFromError(f"config.train.init_from: a {source_kind!r} model cannot initialise a "
                            f"{target_kind!r} model")
    source = {name: np.asarray(value) for name, value in _flatten(pretrained).items()}
    leaves, treedef = jax.tree_util.tree_flatten(params)
    names = list(_flatten(params))
    merged, problems = [], []
    for name, leaf in zip(names, leaves):
        if name not in source:
            problems.append(f"{name}: not in the source model")
            merged.append(None)
        elif remap and name == FIRST_CONV:
            merged.append(_first_conv(tuple(leaf.shape), source[name], source_kind, target_kind))
        elif tuple(source[name].shape) != tuple(leaf.shape):
            problems.append(f"{name}: source {tuple(source[name].shape)} -> model {tuple(leaf.shape)}")
            merged.append(None)
        else:
            merged.append(source[name])
    unused = sorted(set(source) - set(names))
    problems += [f"{name}: in the source model, not in the configured one" for name in unused]
    if problems:
        raise InitFromError("config.train.init_from does not fit the configured model (every source parameter "
                            "must find its place, so that the first step computes what the source did):\n  "
                            + "\n  ".join(problems[:40]) + ("\n  ..." if len(problems) > 40 else ""))
    return jax.tree_util.tree_unflatten(treedef, [m.astype(np.float32) for m in merged])


def load_pretrained(path: str | pathlib.Path) -> tuple[ml_collections.ConfigDict, Any]:
    """(config, params) of the exported model at `path` (see `resolve_init_from`)."""
    return checkpoints.load_model(resolve_init_from(path))


def function_differences(source: ml_collections.ConfigDict, target: ml_collections.ConfigDict) -> list[str]:
    """Same-shape settings in which the configured model differs from its init_from source.

    The copied weights would be read differently: attention split into other
    heads, GroupNorm over other groups, token ids of another vocabulary, or
    timesteps of another noise schedule. SentencePiece tokenizers are
    compared by their model files' contents, not their paths.

    Returns:
      One line per difference, naming the key and both values.
    """
    keys = CLIP_FUNCTION_KEYS if target.model.kind == "clip" else UNET_FUNCTION_KEYS
    if target.model.get("num_head_channels") is not None and source.model.get("num_head_channels") is not None:
        keys = tuple(k for k in keys if k not in ("model.num_heads", "model.num_heads_upsample"))  # unused then
    lines = []
    for key in keys:
        section, name = key.split(".")
        ours = target[section].get(name) if section in target else None
        theirs = source[section].get(name) if section in source else None
        if ours != theirs:
            lines.append(f"config.{key} = {ours!r}, the source model's is {theirs!r}")
    both_sentencepiece = ("text.tokenizer" in keys
                          and source.text.get("tokenizer") == target.text.get("tokenizer") == "sentencepiece")
    if both_sentencepiece:
        ours, theirs = target.text.tokenizer_path, source.text.tokenizer_path
        if checkpoints.file_digest(ours) != checkpoints.file_digest(theirs):
            lines.append(f"config.text.tokenizer_path = {ours!r} is another SentencePiece model than the "
                         f"source model's {theirs!r}")
    return lines
