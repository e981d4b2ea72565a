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

from glide_jax import imaging
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


Captions = tuple[str, ...]  # an image's captions; () for none (an unconditional example)


def _read_text(path: pathlib.Path, what: str) -> str:
    """A UTF-8 text file (a leading byte-order mark dropped); undecodable bytes name the file."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {path}: not UTF-8 text ({err.reason} at byte {err.start}); "
                          "save it as UTF-8") from None


def _row_captions(value, where: str) -> Captions:
    """A manifest row's caption: a string or a list of strings (several captions of one image)."""
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{where}: 'caption' must be a string or a list of strings, got {value!r}")
    return tuple(v.strip() for v in values if v.strip())


def list_folder(source: str | os.PathLike) -> list[tuple[pathlib.Path, Captions]]:
    """The (image path, captions) pairs of a folder or a JSONL/CSV manifest.

    Args:
      source: a directory (images with same-stem `.txt` captions, searched
        recursively; a missing or empty `.txt` means no caption), a `.jsonl`
        file of `{"path": ..., "caption": ...}` lines (a caption may be a list
        of strings), or a `.csv` file with a `path,caption` header. A path
        listed on several rows (COCO style: one row per caption) is one image
        with all its captions; training picks one at random each time.
        Relative paths are relative to the manifest. Text is UTF-8 (a
        byte-order mark is allowed).

    Returns:
      Pairs sorted by path, so the listing does not depend on the file system.

    Raises:
      FileNotFoundError: `source` does not exist.
      ConfigError: a manifest or caption file that cannot be read as
        documented, naming the file (and line).
    """
    source = pathlib.Path(source).expanduser()
    if source.is_dir():
        pairs = []
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
            text = path.with_suffix(".txt")
            caption = _read_text(text, "caption file").strip() if text.exists() else ""
            pairs.append((path, (caption,) if caption else ()))
        return pairs
    if not source.is_file():
        raise FileNotFoundError(f"config.data.folder_path = {str(source)!r}: no such file or directory")
    rows = []  # (where, row)
    if source.suffix.lower() == ".jsonl":
        for line_no, line in enumerate(_read_text(source, "manifest").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{source}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ConfigError(f"{where}: not a JSON object ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict) or "path" not in row or "caption" not in row:
                found = sorted(row) if isinstance(row, dict) else type(row).__name__
                raise ConfigError(f"{where}: a JSONL row needs 'path' and 'caption' keys (the caption may be "
                                  f"\"\" for none), got {found}")
            rows.append((where, row))
    elif source.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(_read_text(source, "manifest"), newline=""))
        header = reader.fieldnames or []
        if "path" not in header or "caption" not in header:
            raise ConfigError(f"{source}: the CSV header must name 'path' and 'caption' columns, got {header}")
        rows = [(f"{source}:{reader.line_num}", row) for row in reader]  # line_num: where the row ends
    else:
        raise ConfigError(f"config.data.folder_path = {str(source)!r}: expected a directory, .jsonl or .csv")
    captions: dict[pathlib.Path, list[str]] = {}
    for where, row in rows:
        if not isinstance(row["path"], str) or not row["path"]:
            raise ConfigError(f"{where}: 'path' must be a non-empty string, got {row['path']!r}")
        image = source.parent / row["path"]
        value = row["caption"]
        captions.setdefault(image, []).extend(_row_captions("" if value is None else value, where))
    return sorted(((path, tuple(texts)) for path, texts in captions.items()), key=lambda pair: str(pair[0]))


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
    for path, captions in list_folder(source):
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}|{json.dumps(captions)}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
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

    The image is turned upright by its EXIF orientation (phone photos), and
    converted to 8-bit RGB by `imaging.to_rgb`.

    Args:
      path: the image file.
      max_short_side: if the shorter side is longer than this, the image is
        shrunk (anti-aliased bicubic) so that it equals it; camera-sized photos
        would otherwise make the dataset huge and its decoding slow.
    """
    with Image.open(path) as img:
        img.load()  # force a full decode so truncated files fail here
        img = imaging.to_rgb(imaging.upright(img))
        short = min(img.size)
        if max_short_side is not None and short > max_short_side:
            scale = max_short_side / short
            size = (max(max_short_side, round(img.width * scale)), max(max_short_side, round(img.height * scale)))
            img = img.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        return np.asarray(img, np.uint8)


class ImageFolderCaptions(tfds.core.GeneratorBasedBuilder):
    """The user's own images with captions.

    Each example is one image with all its captions (a list; training picks
    one at random). Unreadable images are skipped with a warning naming the
    file; the counts and names are kept in `info.metadata` ("skipped",
    "skipped_files", "empty_captions", per split). Images without a caption
    are kept: they train the unconditional model. A folder in which no
    image can be read is an error.
    """

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "First release.",
        "1.1.0": "`caption` is a list: a manifest's rows of one path are one image with all their captions.",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=f"Images with captions from {self.builder_config.source}.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "caption": tfds.features.Sequence(tfds.features.Text()),
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
        held_out = [_is_validation(path, cfg.validation_fraction) for path, _ in pairs]
        splits = {"train": [p for p, out in zip(pairs, held_out) if not out]}
        if not splits["train"]:
            raise ConfigError(f"config.data.folder_validation_fraction = {cfg.validation_fraction}: all "
                              f"{len(pairs)} images fall in the validation split; lower it")
        if any(held_out):
            splits["validation"] = [p for p, out in zip(pairs, held_out) if out]
        elif cfg.validation_fraction > 0:
            _LOG.warning("glide_jax.data: folder_validation_fraction = %s holds out none of %d images; "
                         "no validation split", cfg.validation_fraction, len(pairs))
        for key in ("skipped", "skipped_files", "empty_captions"):
            self.info.metadata[key] = {}
        return {name: self._generate_examples(name, items) for name, items in splits.items()}

    def _generate_examples(self, split: str, pairs):
        skipped, empty = [], 0
        for path, captions in pairs:
            try:
                image = read_rgb(path, self.builder_config.max_short_side)
            except Exception as err:  # noqa: BLE001  PIL raises many types for bad files; none may abort
                _LOG.warning("glide_jax.data: skipping unreadable image %s (%s: %s)", path, type(err).__name__, err)
                skipped.append(str(path))
                continue
            empty += not captions
            yield str(path), {"image": encode_png(image), "caption": list(captions), "path": str(path)}
        if len(skipped) == len(pairs):
            raise ConfigError(f"config.data.folder_path = {self.builder_config.source!r}: none of the "
                              f"{len(pairs)} images of the {split} split could be read (first: {skipped[0]}; "
                              "the log names each with its error)")
        if empty:
            _LOG.warning("glide_jax.data: %d of %d images in the %s split have no caption (kept as "
                         "unconditional)", empty, len(pairs) - len(skipped), split)
        self.info.metadata["skipped"][split] = len(skipped)
        self.info.metadata["skipped_files"][split] = skipped
        self.info.metadata["empty_captions"][split] = empty
