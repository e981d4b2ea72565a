"""TFDS builders: procedural `glide_shapes` and the user's own image folder.

Both are ordinary `tfds.core.GeneratorBasedBuilder`s. Their parameters travel
in a builder config whose name encodes them (sizes and seed for glide_shapes, a
fingerprint of the file listing for the folder), so datasets of different sizes
or contents never overwrite each other in one data_dir and a changed folder is
rebuilt automatically.

Importing this module imports TensorFlow; only glide_jax.data does so.
"""

from __future__ import annotations

import collections
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


@dataclasses.dataclass(frozen=True)
class FolderListing:
    """What `scan_folder` found.

    Attributes:
      pairs: (image path, captions), sorted by path.
      misnamed: images left out because their path is not valid UTF-8 (TFDS
        keys and text features must be), sorted; a directory only.
    """

    pairs: list[tuple[pathlib.Path, Captions]]
    misnamed: tuple[pathlib.Path, ...] = ()


def printable_path(path: os.PathLike) -> str:
    """The path as text, undecodable bytes written as `\\xNN` (for logs and metadata)."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _is_utf8(path: pathlib.Path) -> bool:
    """Whether the path's bytes decode as UTF-8 (and so can be a TFDS key and text feature)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:  # os.fsdecode kept the undecodable bytes as lone surrogates
        return False
    return True


def _walk_files(root: pathlib.Path):
    """Yields (directory, sorted names of its regular files) for root and its subfolders.

    Names starting with "." (`.thumbs/`, macOS `._photo.jpg`,
    `.ipynb_checkpoints/`) are skipped, and so is anything that is not a regular
    file once symlinks are followed (a folder named `album.png`, a broken
    link). Symlinked folders are entered, each real folder only once (by its
    own name rather than a link's, where both are in one folder), so a link
    loop ends.
    """
    visited = {os.path.realpath(root)}
    for directory, dirnames, filenames in os.walk(root, followlinks=True):
        kept = []
        for name in sorted(dirnames, key=lambda name: (os.path.islink(os.path.join(directory, name)), name)):
            real = os.path.realpath(os.path.join(directory, name))
            if not name.startswith(".") and real not in visited:
                visited.add(real)
                kept.append(name)
        dirnames[:] = kept  # os.walk descends only into these
        yield pathlib.Path(directory), sorted(
            name for name in filenames if not name.startswith(".") and os.path.isfile(os.path.join(directory, name)))


def _caption_names(names: list[str]) -> dict[str, str]:
    """stem -> caption file name among `names`: `.txt` in any case, the exact `.txt` first."""
    found = {}
    for name in names:
        stem, suffix = os.path.splitext(name)
        if suffix.lower() == ".txt" and (stem not in found or suffix == ".txt"):
            found[stem] = name
    return found


def _scan_directory(root: pathlib.Path) -> FolderListing:
    """The images under `root` with their captions; misnamed ones are logged and listed apart."""
    pairs, misnamed = [], []
    for directory, names in _walk_files(root):
        captions = _caption_names(names)
        for name in names:
            stem, suffix = os.path.splitext(name)
            if suffix.lower() not in IMAGE_SUFFIXES:
                continue
            path = directory / name
            if not _is_utf8(path):
                misnamed.append(path)
                continue
            text = captions.get(stem)
            caption = _read_text(directory / text, "caption file").strip() if text else ""
            pairs.append((path, (caption,) if caption else ()))
    for path in misnamed:
        _LOG.warning("glide_jax.data: skipping %s: its name is not valid UTF-8; rename it to use it",
                     printable_path(path))
    return FolderListing(sorted(pairs, key=lambda pair: str(pair[0])), tuple(sorted(misnamed, key=os.fsencode)))


def _json_rows(source: pathlib.Path) -> list[tuple[str, dict]]:
    """(where, row) of a JSONL manifest's non-blank lines; `where` is FILE:LINE."""
    rows = []
    for line_no, line in enumerate(_read_text(source, "manifest").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{line_no}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            reason = err.msg.removesuffix(" at")  # "Unterminated string starting at"
            raise ConfigError(f"{where}: not a JSON object ({reason} at column {err.colno})") from None
        if not isinstance(row, dict) or "path" not in row or "caption" not in row:
            found = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise ConfigError(f"{where}: a JSONL row needs 'path' and 'caption' keys (the caption may be "
                              f"\"\" for none), got {found}")
        rows.append((where, row))
    return rows


def _next_csv_row(reader, source: pathlib.Path) -> tuple[str, list[str]] | None:
    """(FILE:LINE where the row starts, its fields), or None at the end of the file."""
    where = f"{source}:{reader.line_num + 1}"
    try:
        return where, next(reader)
    except StopIteration:
        return None
    except csv.Error as err:
        raise ConfigError(f"{where}: not valid CSV ({err}); a caption with commas, quotes or line breaks "
                          "must be in double quotes, its own quotes doubled (\"\")") from None


def _csv_rows(source: pathlib.Path) -> list[tuple[str, dict]]:
    """(where, row) of a CSV manifest's non-blank rows; `where` is FILE:LINE, the line a row starts on.

    The strict dialect makes a quote left open (which would swallow every
    later row into one caption) an error; a row with more fields than the
    header (an unquoted comma in a caption) is one too, rather than a caption
    cut at the comma.
    """
    reader = csv.reader(io.StringIO(_read_text(source, "manifest"), newline=""), strict=True)
    first = _next_csv_row(reader, source)
    header = first[1] if first else []
    if "path" not in header or "caption" not in header:
        raise ConfigError(f"{source}: the CSV header must name 'path' and 'caption' columns, got {header}")
    rows = []
    while (row := _next_csv_row(reader, source)) is not None:
        where, fields = row
        if len(fields) > len(header):
            raise ConfigError(f"{where}: {len(fields)} fields but the header names {len(header)}; put a "
                              "caption that contains commas in double quotes")
        if fields:  # a blank line
            rows.append((where, dict(zip(header, fields + [""] * (len(header) - len(fields))))))
    return rows


def scan_folder(source: str | os.PathLike) -> FolderListing:
    """The images and captions of a folder or a JSONL/CSV manifest.

    Args:
      source: a directory (images with same-stem `.txt` captions, searched
        recursively through symlinked folders too; a missing or empty `.txt`
        means no caption; names starting with "." are skipped), a `.jsonl`
        file of `{"path": ..., "caption": ...}` lines (a caption may be a list
        of strings), or a `.csv` file with a `path,caption` header. A path
        listed on several rows (COCO style: one row per caption) is one image
        with all its captions; training picks one at random each time.
        Relative paths are relative to the manifest, and normalised
        (`img/../img/a.png` is `img/a.png`). Text is UTF-8 (a byte-order mark
        is allowed).

    Returns:
      The listing; its pairs are sorted by path, so it does not depend on the
      file system.

    Raises:
      FileNotFoundError: `source` does not exist.
      ConfigError: a manifest or caption file that cannot be read as
        documented, naming the file (and line).
    """
    source = pathlib.Path(source).expanduser()
    if source.is_dir():
        return _scan_directory(source)
    if not source.is_file():
        raise FileNotFoundError(f"config.data.folder_path = {str(source)!r}: no such file or directory")
    if source.suffix.lower() == ".jsonl":
        rows = _json_rows(source)
    elif source.suffix.lower() == ".csv":
        rows = _csv_rows(source)
    else:
        raise ConfigError(f"config.data.folder_path = {str(source)!r}: expected a directory, .jsonl or .csv")
    captions: dict[pathlib.Path, list[str]] = {}
    for where, row in rows:
        if not isinstance(row["path"], str) or not row["path"]:
            raise ConfigError(f"{where}: 'path' must be a non-empty string, got {row['path']!r}")
        image = pathlib.Path(os.path.normpath(source.parent / row["path"]))
        value = row["caption"]
        captions.setdefault(image, []).extend(_row_captions("" if value is None else value, where))
    return FolderListing(sorted(((path, tuple(texts)) for path, texts in captions.items()),
                                key=lambda pair: str(pair[0])))


def list_folder(source: str | os.PathLike) -> list[tuple[pathlib.Path, Captions]]:
    """The (image path, captions) pairs of `scan_folder(source)`, sorted by path."""
    return scan_folder(source).pairs


@dataclasses.dataclass(eq=False)
class ImageFolderConfig(tfds.core.BuilderConfig):
    """Where the folder is and how much of it is held out."""

    source: str = ""
    validation_fraction: float = 0.0
    max_short_side: int = 512


# The listing the newest fingerprint was made from, by config name: a build then
# uses exactly what was fingerprinted, and lists (and warns about) the folder once.
_FINGERPRINTED: dict[str, FolderListing] = {}


def image_folder_config(data_config) -> ImageFolderConfig:
    """A builder config whose name fingerprints the listing (paths, captions, sizes, mtimes)."""
    source = str(pathlib.Path(data_config.folder_path).expanduser().resolve())
    digest = hashlib.sha1(
        f"{source}|{data_config.folder_validation_fraction}|{data_config.folder_max_short_side}".encode())
    listing = scan_folder(source)
    for path, captions in listing.pairs:
        stat = path.stat() if path.exists() else None
        digest.update(f"{path}|{json.dumps(captions)}|{stat and stat.st_size}|{stat and stat.st_mtime_ns}\n".encode())
    for path in listing.misnamed:  # so that the build's record of them is kept up to date
        digest.update(b"misnamed|" + os.fsencode(path) + b"\n")
    name = f"f{digest.hexdigest()[:16]}"
    _FINGERPRINTED.clear()
    _FINGERPRINTED[name] = listing
    return ImageFolderConfig(
        name=name,
        source=source,
        validation_fraction=float(data_config.folder_validation_fraction),
        max_short_side=int(data_config.folder_max_short_side),
    )


def _is_validation(path: pathlib.Path, fraction: float) -> bool:
    """Whether the image falls in the held-out share (a hash of its file name's bytes)."""
    return zlib.crc32(os.fsencode(path.name)) % 10_000 < fraction * 10_000


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


# What a folder build records per split in info.metadata (see ImageFolderCaptions).
METADATA_KEYS = ("skipped", "skipped_files", "empty_captions", "short_sides")


class ImageFolderCaptions(tfds.core.GeneratorBasedBuilder):
    """The user's own images with captions.

    Each example is one image with all its captions (a list; training picks
    one at random). Unreadable images, and images whose path is not valid
    UTF-8, are skipped with a warning naming the file; the counts and names
    (undecodable bytes as `\\xNN`) are kept in `info.metadata` ("skipped",
    "skipped_files", "empty_captions", per split), with "short_sides": how
    many stored images have each short side (after `max_short_side`), which
    the input pipeline uses to warn about images it must upscale. Images
    without a caption are kept: they train the unconditional model. A folder
    in which no image can be read is an error.
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
        listing = _FINGERPRINTED.pop(cfg.name, None)
        if listing is None:  # a config not made by image_folder_config
            listing = scan_folder(cfg.source)
        pairs = listing.pairs
        if not pairs:
            misnamed = f" ({len(listing.misnamed)} skipped: names not UTF-8)" if listing.misnamed else ""
            raise ConfigError(f"config.data.folder_path = {cfg.source!r}: no images found{misnamed}")
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
        # A misnamed image is counted as skipped in the split it would be in (train if that split is absent).
        misnamed = {name: [] for name in splits}
        for path in listing.misnamed:
            split = "validation" if _is_validation(path, cfg.validation_fraction) else "train"
            misnamed[split if split in splits else "train"].append(printable_path(path))
        for key in METADATA_KEYS:
            self.info.metadata[key] = {}
        return {name: self._generate_examples(name, items, misnamed[name]) for name, items in splits.items()}

    def _generate_examples(self, split: str, pairs, misnamed: list[str]):
        """Yields the split's readable images; `misnamed` (names not UTF-8) are counted as skipped."""
        skipped, empty, short_sides = list(misnamed), 0, collections.Counter()
        for path, captions in pairs:
            try:
                image = read_rgb(path, self.builder_config.max_short_side)
            except Exception as err:  # noqa: BLE001  PIL raises many types for bad files; none may abort
                _LOG.warning("glide_jax.data: skipping unreadable image %s (%s: %s)", path, type(err).__name__, err)
                skipped.append(str(path))
                continue
            empty += not captions
            short_sides[min(image.shape[:2])] += 1
            yield str(path), {"image": encode_png(image), "caption": list(captions), "path": str(path)}
        total = len(pairs) + len(misnamed)
        if len(skipped) == total:
            raise ConfigError(f"config.data.folder_path = {self.builder_config.source!r}: none of the "
                              f"{total} images of the {split} split could be read (first: {skipped[0]}; "
                              "the log names each with its error)")
        if empty:
            _LOG.warning("glide_jax.data: %d of %d images in the %s split have no caption (kept as "
                         "unconditional)", empty, total - len(skipped), split)
        self.info.metadata["skipped"][split] = len(skipped)
        self.info.metadata["skipped_files"][split] = skipped
        self.info.metadata["empty_captions"][split] = empty
        self.info.metadata["short_sides"][split] = {str(side): short_sides[side] for side in sorted(short_sides)}
