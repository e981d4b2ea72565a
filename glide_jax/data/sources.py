"""Where examples come from: glide_shapes, the user's folder or the TFDS catalogue.

Each source gives a host's share of one split as a tf.data.Dataset of
`{"image": encoded image bytes, "caption": string or 1-D strings}` in a fixed
order (files are never shuffled here; the pipeline shuffles deterministically).
Images stay encoded so that shuffling and skipping are cheap.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from glide_jax.config import ConfigError
from glide_jax.data.tf_env import import_tensorflow, import_tfds

tf = import_tensorflow()
tfds = import_tfds()


@dataclasses.dataclass(frozen=True)
class HostSplit:
    """A host's share of a split.

    Attributes:
      dataset: tf.data.Dataset of {"image": tf.string, "caption": tf.string (scalar
        or 1-D)}, in a fixed order.
      num_examples: examples in this share (equal on every host).
      name: the share, for messages: "train", or "train (host 2 of 2)".
      short_sides: {short side in px: images} over the whole split, where the
        build recorded it (folders built by this version); else None.
    """

    dataset: Any
    num_examples: int
    name: str
    short_sides: dict[int, int] | None = None

    def smaller_than(self, size: int) -> tuple[int, int] | None:
        """(images of the split with a short side under `size`, images), or None if unrecorded."""
        if self.short_sides is None:
            return None
        return (sum(n for side, n in self.short_sides.items() if side < size), sum(self.short_sides.values()))


def _nested_decoders(key: str) -> dict:
    decoders: dict = tfds.decode.SkipDecoding()
    for part in reversed(key.split("/")):
        decoders = {part: decoders}
    return decoders


def _get_nested(example: dict, key: str, config_key: str):
    node = example
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            found = sorted(node) if isinstance(node, dict) else type(node).__name__
            raise ConfigError(f"config.data.{config_key} = {key!r}: feature {part!r} not found; available: {found}")
        node = node[part]
    return node


def make_builder(data_config):
    """The prepared-or-preparable builder for glide_shapes or folder (not catalogue sets)."""
    from glide_jax.data import builders  # pylint: disable=import-outside-toplevel

    if data_config.dataset == "glide_shapes":
        return builders.GlideShapes(config=builders.glide_shapes_config(data_config), data_dir=data_config.data_dir)
    if data_config.dataset == "folder":
        return builders.ImageFolderCaptions(config=builders.image_folder_config(data_config),
                                            data_dir=data_config.data_dir)
    raise ConfigError(f"config.data.dataset = {data_config.dataset!r} has no local builder")


def catalogue_builder(data_config):
    """The TFDS catalogue builder config.data.tfds_name, its feature keys checked before any download.

    Raises:
      ConfigError: an unknown `tfds_name` (with close matches), or an
        `image_key` / `text_key` the dataset's features do not have (or a
        text feature that is not a string or a list of strings).
    """
    name = data_config.tfds_name
    try:
        builder = tfds.builder(name, data_dir=data_config.data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        close = difflib.get_close_matches(name, tfds.list_builders(with_community_datasets=False), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"config.data.tfds_name = {name!r}: no such TFDS dataset{hint}") from None
    features = builder.info.features.get_tensor_info()  # known from the builder's code, before preparing
    _get_nested(features, data_config.image_key, "image_key")
    text = _get_nested(features, data_config.text_key, "text_key")
    if not isinstance(text, tfds.features.TensorInfo) or text.dtype != tf.string or len(text.shape) > 1:
        raise ConfigError(f"config.data.text_key = {data_config.text_key!r}: expected a string or list of "
                          f"strings, got {text}")
    return builder


def _host_split_name(split: str, splits, process_index: int, process_count: int, where: str) -> str:
    """The TFDS split string of this host's share of `split`.

    Raises:
      ValueError: `split` is not in `splits`, or has fewer examples than
        there are hosts (a ConfigError then), or `process_index` is out of range.
    """
    if split not in splits:
        raise ValueError(f"split {split!r} not in {where}; available: {', '.join(sorted(splits))}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} out of range for process_count {process_count}")
    if process_count == 1:
        return split
    size = int(splits[split].num_examples)
    if size < process_count:
        raise ConfigError(f"split {split!r} of {where} has {size} example(s), fewer than the {process_count} "
                          "hosts; every host needs at least one (use a larger split, or skip it)")
    return tfds.even_splits(split, n=process_count, drop_remainder=True)[process_index]


def load_host_split(data_config, split: str, process_index: int, process_count: int) -> HostSplit:
    """Prepares the dataset if needed and returns this host's disjoint share of `split`.

    Shares come from `tfds.even_splits(..., drop_remainder=True)`, so every host
    gets the same number of examples and no example is on two hosts.

    Args:
      data_config: config.data.
      split: "train", "validation" or any split the dataset has.
      process_index: this host, in [0, process_count).
      process_count: number of hosts.

    Images stay encoded bytes (the pipeline decodes them in its own map).
    """
    read_config = tfds.ReadConfig(interleave_cycle_length=1, try_autocache=False)
    if data_config.dataset == "tfds":
        image_key, text_key = data_config.image_key, data_config.text_key
        builder = catalogue_builder(data_config)  # checks the keys before downloading
        builder.download_and_prepare()  # split sizes are only known once prepared
        name = _host_split_name(split, builder.info.splits, process_index, process_count, data_config.tfds_name)
        ds, info = tfds.load(
            data_config.tfds_name, split=name, data_dir=data_config.data_dir, download=True,
            shuffle_files=False, with_info=True, read_config=read_config,
            decoders=_nested_decoders(image_key),
        )
    else:
        image_key, text_key = "image", "caption"
        builder = make_builder(data_config)
        builder.download_and_prepare()
        info = builder.info
        name = _host_split_name(split, info.splits, process_index, process_count, builder.name)
        ds = builder.as_dataset(split=name, shuffle_files=False, read_config=read_config,
                                decoders={"image": tfds.decode.SkipDecoding()})
    # Fail at set-up (naming the config key) rather than inside a tf.data map.
    _get_nested(ds.element_spec, image_key, "image_key")
    text_spec = _get_nested(ds.element_spec, text_key, "text_key")
    if not isinstance(text_spec, tf.TensorSpec) or text_spec.dtype != tf.string or text_spec.shape.rank > 1:
        raise ConfigError(f"config.data.text_key = {text_key!r}: expected a string or list of strings, got {text_spec}")
    ds = ds.map(lambda ex: {"image": _get_nested(ex, image_key, "image_key"),
                            "caption": _get_nested(ex, text_key, "text_key")})
    label = split if process_count == 1 else f"{split} (host {process_index + 1} of {process_count})"
    recorded = info.metadata.get("short_sides", {}).get(split) if data_config.dataset == "folder" else None
    short_sides = None if recorded is None else {int(side): int(n) for side, n in recorded.items()}
    return HostSplit(ds, int(info.splits[name].num_examples), label, short_sides)


def prepare_dataset(data_config) -> dict:
    """Builds (or downloads) config.data's dataset if needed; returns a summary.

    In a multi-host run the input pipeline calls this on process 0 first
    and the other hosts wait for it, so hosts never race to write the same
    data_dir; a large dataset is better prepared once beforehand with
    `python -m glide_jax.data.prepare`.

    Returns:
      {"name": builder name/config, "data_dir", "splits": {split: examples}}
      plus, for a folder, "skipped", "skipped_files" and "empty_captions".
    """
    if data_config.dataset == "tfds":
        builder = catalogue_builder(data_config)
    else:
        builder = make_builder(data_config)
    builder.download_and_prepare()
    info = builder.info
    summary = {
        "name": info.full_name,
        "data_dir": str(builder.data_dir),
        "splits": {name: int(split.num_examples) for name, split in info.splits.items()},
    }
    if data_config.dataset == "folder":
        summary.update({key: dict(info.metadata.get(key, {})) for key in ("skipped", "skipped_files",
                                                                          "empty_captions")})
    return summary
