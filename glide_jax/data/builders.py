"""TFDS builders: procedural `glide_shapes` and the user's own image folder.

Both are ordinary `tfds.core.GeneratorBasedBuilder`s. Their parameters travel
in a builder config whose name encodes them (sizes and seed for glide_shapes, a
fingerprint of the file listing for the folder), so datasets of different sizes
or contents never overwrite each other in one data_dir and a changed folder is
rebuilt automatically.

Importing this module imports TensorFlow; only glide_jax.data does so.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import logging
import os
import pathlib
import zlib

import numpy as np
from PIL import Image

from glide_jax.config import ConfigError
from glide_jax.data import shapes
from glide_jax.data.tf_env import import_tfds

tfds = import_tfds()

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_LOG = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class GlideShapesConfig(tfds.core.BuilderConfig):
    """Split sizes, image side, seed and objects per scene of a glide_shapes build."""

    train_size: int = 10_000
    validation_size: int = 1_000
    resolution: int = 256
    seed: int = 0
    max_objects: int = shapes.MAX_OBJECTS


def glide_shapes_config(data_config) -> GlideShapesConfig:
    """The builder config for config.data (the name encodes every parameter)."""
    d = data_config
    name = f"r{d.shapes_resolution}_s{d.shapes_seed}_n{d.shapes_train_size}_v{d.shapes_validation_size}"
    if d.shapes_max_objects != shapes.MAX_OBJECTS:  # the default keeps the names of existing builds
        name += f"_o{d.shapes_max_objects}"
    return GlideShapesConfig(
        name=name,
        train_size=int(d.shapes_train_size),
        validation_size=int(d.shapes_validation_size),
        resolution=int(d.shapes_resolution),
        seed=int(d.shapes_seed),
        max_objects=int(d.shapes_max_objects),
    )


def encode_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes at zlib level 1.

    Level 1 files are a little larger than TFDS's default encoding but decode
    about 40% faster, and decoding is the input pipeline's largest cost
    (docs/PERFORMANCE.md); encoding is faster too, which speeds up builds.
    """
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class GlideShapes(tfds.core.GeneratorBasedBuilder):
    """1-3 coloured shapes on a plain background with compositional captions."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        side = self.builder_config.resolution
        label = tfds.features.ClassLabel
        return self.dataset_info_from_configs(
            description="Procedural coloured shapes with captions (glide_jax.data.shapes).",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(side, side, 3), encoding_format="png"),
                    "caption": tfds.features.Text(),
                    "background": label(names=shapes.BACKGROUND_NAMES),
                    "objects": tfds.features.Sequence(
                        {
                            "shape": label(names=shapes.SHAPES),
                            "color": label(names=shapes.COLOR_NAMES),
                            "size": label(names=shapes.SIZE_NAMES),
                            "position": label(names=shapes.POSITION_NAMES),
                            "center": tfds.features.Tensor(shape=(2,), dtype=np.float32),
                            "radius": tfds.features.Scalar(dtype=np.float32),
                        }
                    ),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: every example is generated
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.train_size),
            "validation": self._generate_examples("validation", cfg.validation_size),
        }

    def _generate_examples(self, split: str, count: int):
        cfg = self.builder_config
        for index in range(count):
            scene, image = shapes.generate(cfg.seed, split, index, cfg.resolution, cfg.max_objects)
            yield index, {
                "image": encode_png(image),
                "caption": scene.caption,
                "background": scene.background,
                "objects": [
                    {
                        "shape": o.shape,
                        "color": o.color,
                        "size": o.size,
                        "position": o.position,
                        "center": np.asarray(o.center, np.float32),
                        "radius": np.float32(o.radius),
                    }
                    for o in scene.objects
                ],
            }


def list_folder(source: str | os.PathLike) -> list[tuple[pathlib.Path, str]]:
    """The (image path, caption) pairs of a folder or a JSONL/CSV manifest.

    Args:
      source: a directory (images with same-stem `.txt` captions, searched
        recursively; a missing `.txt` means an empty caption), a `.jsonl` file
        of `{"path": ..., "caption": ...}` lines, or a `.csv` file with a
        `path,caption` header. Relative paths are relative to the manifest.

    Returns:
      Pairs sorted by path, so the listing does not depend on the file system.
    """
    source = pathlib.Path(source).expanduser()
    if source.is_dir():
        pairs = []
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            text = path.with_suffix(".txt")
            pairs.append((path, text.read_text(encoding="utf-8").strip() if text.exists() else ""))
        return pairs
    if not source.is_file():
        raise FileNotFoundError(f"config.data.folder_path = {str(source)!r}: no such file or directory")
    if source.suffix.lower() == ".jsonl":
        rows = []
        for line_no, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if "path" not in row:
                    raise ConfigError(f"{source}:{line_no}: a JSONL row needs a 'path' key, got {sorted(row)}")
                rows.append(row)
    elif source.suffix.lower() == ".csv":
        with source.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        if rows and "path" not in rows[0]:
            raise ConfigError(f"{source}: the CSV header must name 'path' and 'caption' columns")
    else:
        raise ConfigError(f"config.data.folder_path = {str(source)!r}: expected a directory, .jsonl or .csv")
    base = source.parent
    pairs = [(base / row["path"], (row.get("caption") or "").strip()) for row in rows]
    return sorted(pairs, key=lambda pair: str(pair[0]))


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    """Where the folder is and how much of it is held out."""

    source: str = ""
    validation_fraction: float = 0.0
    max_short_side: int = 512


def image_folder_config(data_config) -> ImageFolderConfig:
    """A builder config whose name fingerprints the listing (paths, captions, sizes, mtimes)."""
    source = str(pathlib.Path(data_config.folder_path).expanduser().resolve())
    digest = hashlib.sha1(
        f"{source}|{data_config.folder_validation_fraction}|{data_config.folder_max_short_side}".encode())
    for path, caption in list_folder(source):
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}|{caption}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
    return ImageFolderConfig(
        name=f"f{digest.hexdigest()[:16]}",
        source=source,
        validation_fraction=float(data_config.folder_validation_fraction),
        max_short_side=int(data_config.folder_max_short_side),
    )


def _is_validation(path: pathlib.Path, fraction: float) -> bool:
    return zlib.crc32(path.name.encode()) % 10_000 < fraction * 10_000


def read_rgb(path: pathlib.Path, max_short_side: int | None = None) -> np.ndarray:
    """Decodes an image file fully to (H, W, 3) uint8; raises on any defect.

    Args:
      path: the image file.
      max_short_side: if the shorter side is longer than this, the image is
        shrunk (anti-aliased bicubic) so that it equals it; camera-sized photos
        would otherwise make the dataset huge and its decoding slow.
    """
    with Image.open(path) as img:
        img.load()  # force a full decode so truncated files fail here
        img = img.convert("RGB")
        short = min(img.size)
        if max_short_side is not None and short > max_short_side:
            scale = max_short_side / short
            size = (max(max_short_side, round(img.width * scale)), max(max_short_side, round(img.height * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        return np.asarray(img, np.uint8)


class ImageFolderCaptions(tfds.core.GeneratorBasedBuilder):
    """The user's own images with captions.

    Unreadable images are skipped with a warning naming the file; the counts
    and names are kept in `info.metadata` ("skipped", "skipped_files",
    "empty_captions", per split). Empty captions are kept: they train the
    unconditional model.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"Images with captions from {self.builder_config.source}.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "caption": tfds.features.Text(),
                    "path": tfds.features.Text(),
                }
            ),
            metadata=tfds.core.MetadataDict(),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # local files only
        cfg = self.builder_config
        pairs = list_folder(cfg.source)
        if not pairs:
            raise ConfigError(f"config.data.folder_path = {cfg.source!r}: no images found")
        splits = {"train": [p for p in pairs if not _is_validation(p[0], cfg.validation_fraction)]}
        if cfg.validation_fraction > 0:
            splits["validation"] = [p for p in pairs if _is_validation(p[0], cfg.validation_fraction)]
        for key in ("skipped", "skipped_files", "empty_captions"):
            self.info.metadata[key] = {}
        return {name: self._generate_examples(name, items) for name, items in splits.items()}

    def _generate_examples(self, split: str, pairs):
        skipped, empty = [], 0
        for path, caption in pairs:
            try:
                image = read_rgb(path, self.builder_config.max_short_side)
            except Exception as err:  # noqa: BLE001  PIL raises many types for bad files; none may abort
                _LOG.warning("glide_jax.data: skipping unreadable image %s (%s: %s)", path, type(err).__name__, err)
                skipped.append(str(path))
                continue
            empty += not caption
            yield str(path), {"image": encode_png(image), "caption": caption, "path": str(path)}
        if empty:
            _LOG.warning("glide_jax.data: %d empty captions in %s split (kept as unconditional)", empty, split)
        self.info.metadata["skipped"][split] = len(skipped)
        self.info.metadata["skipped_files"][split] = skipped
        self.info.metadata["empty_captions"][split] = empty
