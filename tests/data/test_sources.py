"""The user's folder (directory, JSONL, CSV) and TFDS catalogue datasets."""

import json
import os
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from glide_jax import config as config_lib
from glide_jax import data
from glide_jax.data import builders, sources
from glide_jax.text import get_tokenizer


class TinyCaptions(tfds.core.GeneratorBasedBuilder):
    """A coco_captions look-alike: an image and a list of captions per example."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        # Plain DatasetInfo: this module is not in a package, so TFDS can't look up config files beside it.
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
            }))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for i in range(12):
            image = np.full((20 + i, 24, 3), 10 * i, np.uint8)
            yield i, {"image": image, "captions": [{"text": f"example {i} caption {j}"} for j in range(3)]}


def _folder_config(tiny_config, path, **data_overrides):
    config = tiny_config(**{"dataset": "folder", "folder_path": str(path), "batch_size": 2, **data_overrides})
    config.text.text_ctx = 16
    return config


def _captions(batches, tokenizer):
    return [tokenizer.decode(t[m].tolist()) for b in batches for t, m in zip(b["tokens"], b["mask"])]


def test_folder_skips_corrupt_image_counts_and_names_it(tiny_config, image_folder, caplog):
    config = _folder_config(tiny_config, image_folder)
    with caplog.at_level(logging.WARNING):
        report = sources.prepare_dataset(config.data)
    assert report["skipped"] == {"train": 1}
    assert report["skipped_files"]["train"] == [str(image_folder / "broken.jpg")]
    assert report["empty_captions"] == {"train": 2}  # img2 has an empty .txt, img5 none
    assert any("broken.jpg" in rec.getMessage() for rec in caplog.records)
    tokenizer = get_tokenizer(config.text)
    pipe = data.create_input_pipeline(config, seed=0, num_epochs=1)
    batches = list(pipe)
    assert pipe.examples_per_epoch == 6 and len(batches) == 3
    captions = _captions(batches, tokenizer)
    assert sorted(captions) == ["", ""] + [f"photo number {i}" for i in (0, 1, 3, 4)]
    assert "a caption that must never appear" not in captions
    unconditional = np.concatenate([b["mask"] for b in batches]).any(-1) == False  # noqa: E712
    tokens = np.concatenate([b["tokens"] for b in batches])
    assert unconditional.sum() == 2 and np.all(tokens[unconditional] == tokenizer.pad_token)
    for batch in batches:
        assert batch["image"].shape == (2, 32, 32, 3) and -1 <= batch["image"].min() <= batch["image"].max() <= 1
        levels = (batch["image"] + 1.0) * 127.5  # resized from 40..80 px, yet on the 8-bit grid
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_manifest_lists_paths_and_captions(tmp_path, tiny_config, image_folder, fmt):
    rows = [{"path": str(image_folder / f"img{i}.png"), "caption": f"listed {i}"} for i in (0, 1, 3)]
    rows.append({"path": str(image_folder / "broken.jpg"), "caption": "bad"})
    rows.append({"path": str(tmp_path / "missing.png"), "caption": "gone"})
    manifest = tmp_path / f"list.{fmt}"
    if fmt == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        manifest.write_text("path,caption\n" + "".join(f"{r['path']},{r['caption']}\n" for r in rows))
    config = _folder_config(tiny_config, manifest)
    report = sources.prepare_dataset(config.data)
    assert report["skipped"] == {"train": 2}
    assert sorted(report["skipped_files"]["train"]) == sorted([str(image_folder / "broken.jpg"),
                                                                str(tmp_path / "missing.png")])
    batches = list(data.create_input_pipeline(config, seed=0, batch_size=1, num_epochs=1))
    assert sorted(_captions(batches, get_tokenizer(config.text))) == ["listed 0", "listed 1", "listed 3"]


def test_folder_listing_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder_path"):
        builders.list_folder(tmp_path / "nope")
    bad = tmp_path / "list.jsonl"
    bad.write_text('{"caption": "no path"}\n')
    with pytest.raises(ValueError, match="list.jsonl:1"):
        builders.list_folder(bad)


def test_catalogue_dataset_through_tfds_load(tiny_config, data_dir):
    TinyCaptions(data_dir=str(data_dir)).download_and_prepare()
    config = tiny_config(dataset="tfds", tfds_name="tiny_captions", image_key="image", text_key="captions/text",
                         batch_size=4)
    config.text.text_ctx = 16
    tokenizer = get_tokenizer(config.text)
    batches = list(data.create_input_pipeline(config, seed=0, num_epochs=1))
    assert len(batches) == 3 and batches[0]["image"].shape == (4, 32, 32, 3)
    picked = _captions(batches, tokenizer)
    # One of each example's three captions, picked at random (not always the first).
    indices = sorted(int(c.split()[1]) for c in picked)
    assert indices == list(range(12))
    assert len({c.split()[-1] for c in picked}) > 1
    # Each image's grey level identifies its example; the caption must match it.
    for batch, caps in zip(batches, np.array(picked).reshape(3, 4)):
        levels = np.rint((batch["image"].mean((1, 2, 3)) + 1) * 127.5 / 10).astype(int)
        assert [int(c.split()[1]) for c in caps] == levels.tolist()
    assert sorted(data.iter_captions(config)) == sorted(f"example {i} caption {j}" for i in range(12) for j in range(3))
    bad = tiny_config(dataset="tfds", tfds_name="tiny_captions", text_key="captions/words")
    with pytest.raises(config_lib.ConfigError, match="config.data.text_key"):
        data.create_input_pipeline(bad, seed=0)


def test_data_config_errors_name_the_key():
    config = config_lib.base_config()
    config.data.dataset = "folder"
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.folder_path"):
        config_lib.validate(config)
    config = config_lib.base_config()
    config.data.mask_min_fraction = 0.9
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.mask_min_fraction"):
        config_lib.validate(config)
    config = config_lib.base_config()
    config.data.batch_size = 0
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.batch_size"):
        config_lib.validate(config)


def test_prepare_dataset_summarises_splits(shapes_config):
    summary = sources.prepare_dataset(shapes_config.data)
    assert summary["splits"] == {"train": 48, "validation": 16}
    assert summary["name"] == "glide_shapes/r64_s0_n48_v16/1.0.0"


def test_large_folder_images_are_stored_shrunk(tmp_path):
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((90, 150, 3), np.uint8)).save(path)
    assert builders.read_rgb(path, max_short_side=30).shape == (30, 50, 3)
    assert builders.read_rgb(path, max_short_side=120).shape == (90, 150, 3)


def _save(path, array, mode=None, **params):
    Image.fromarray(array, mode).save(path, **params) if mode else Image.fromarray(array).save(path, **params)
    return path


def test_images_of_every_mode_become_upright_8_bit_rgb(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    grey16 = builders.read_rgb(_save(tmp_path / "g16.png", ramp))
    # PIL's own conversion clips 16-bit levels at 255 (a white image); they are scaled instead.
    assert grey16.shape == (64, 64, 3) and abs(grey16.mean() - 127.5) < 1 and grey16.min() == 0
    floats = Image.fromarray(np.full((8, 8), 0.5, np.float32), "F")
    floats.save(tmp_path / "f.tif")
    assert np.all(builders.read_rgb(tmp_path / "f.tif") == 128)
    # Transparent pixels are composited onto white, whatever colour they hide.
    rgba = np.zeros((8, 8, 4), np.uint8)
    rgba[..., 0] = 255  # red everywhere, but only the left half opaque
    rgba[:, :4, 3] = 255
    composited = builders.read_rgb(_save(tmp_path / "rgba.png", rgba))
    assert np.all(composited[:, :4] == [255, 0, 0]) and np.all(composited[:, 4:] == 255)
    palette = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8), "P")
    palette.info["transparency"] = 0  # palette index 0 (the top-left pixel) is transparent
    palette.save(tmp_path / "p.png", transparency=0)
    assert np.all(builders.read_rgb(tmp_path / "p.png")[0, 0] == 255)
    # EXIF orientation 6 (rotate 90 degrees clockwise to view): stored 20 wide, shown 20 tall.
    wide = np.zeros((10, 20, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(wide).save(tmp_path / "rotated.jpg", exif=exif)
    assert builders.read_rgb(tmp_path / "rotated.jpg").shape == (20, 10, 3)


def test_manifest_rows_of_one_image_are_its_captions(tmp_path, tiny_config, image_folder):
    # COCO style: one row per caption; a JSONL caption may also be a list. BOM-prefixed files are fine.
    rows = [{"path": str(image_folder / "img0.png"), "caption": "first of zero"},
            {"path": str(image_folder / "img0.png"), "caption": ["second of zero", "  "]},
            {"path": str(image_folder / "img1.png"), "caption": ""}]
    manifest = tmp_path / "coco.jsonl"
    manifest.write_text("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert builders.list_folder(manifest) == [(image_folder / "img0.png", ("first of zero", "second of zero")),
                                              (image_folder / "img1.png", ())]
    csv_manifest = tmp_path / "excel.csv"
    csv_manifest.write_text("\ufeffpath,caption\nimg0.png,one\nimg0.png,two\n", encoding="utf-8")
    (tmp_path / "img0.png").write_bytes((image_folder / "img0.png").read_bytes())
    assert builders.list_folder(csv_manifest) == [(tmp_path / "img0.png", ("one", "two"))]
    config = _folder_config(tiny_config, manifest, batch_size=1)
    assert sources.prepare_dataset(config.data)["empty_captions"] == {"train": 1}
    picked = set()
    for seed in range(8):  # each epoch picks one of img0's captions at random
        batches = list(data.create_input_pipeline(config, seed=seed, num_epochs=1))
        picked |= set(_captions(batches, get_tokenizer(config.text)))
    assert picked == {"first of zero", "second of zero", ""}


@pytest.mark.parametrize("name, content, message", [
    ("no_caption.jsonl", '{"path": "a.png", "text": "wrong key"}\n', r"no_caption\.jsonl:1: .*'caption'"),
    ("broken.jsonl", '{"path": "a.png", "caption": "x"}\n{"path": "b.png", "caption": \n',
     r"broken\.jsonl:2: not a JSON object"),
    ("number.jsonl", '{"path": "a.png", "caption": 5}\n', r"number\.jsonl:1: 'caption' must be a string"),
    ("text.csv", "path,text\na.png,wrong column\n", r"text\.csv: the CSV header must name 'path' and 'caption'"),
])
def test_manifest_mistakes_name_the_file_and_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(config_lib.ConfigError, match=message):
        builders.list_folder(tmp_path / name)


def test_caption_files_must_be_utf8(tmp_path):
    _save(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "a.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(config_lib.ConfigError, match=r"caption file .*a\.txt: not UTF-8"):
        builders.list_folder(tmp_path)


def test_folders_nothing_can_be_trained_on_are_errors(tmp_path, tiny_config, caplog):
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    for i in range(3):
        (unreadable / f"x{i}.png").write_bytes(b"not an image")
    with pytest.raises(config_lib.ConfigError, match=r"none of the 3 images of the train split could be read "
                                                     r"\(first: .*x0\.png"):
        sources.prepare_dataset(_folder_config(tiny_config, unreadable).data)
    # A validation fraction too small to hold out any image: no validation split, with a warning.
    few = tmp_path / "few"
    few.mkdir()
    for i in range(3):
        _save(few / f"y{i}.png", np.full((8, 8, 3), i, np.uint8))
    with caplog.at_level(logging.WARNING):
        summary = sources.prepare_dataset(_folder_config(tiny_config, few, folder_validation_fraction=1e-4).data)
    assert summary["splits"] == {"train": 3}
    assert any("holds out none of 3 images" in rec.getMessage() for rec in caplog.records)
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.folder_max_short_side"):
        _folder_config(tiny_config, few, folder_max_short_side=16)  # below the 32 px model


def test_catalogue_feature_keys_are_checked_before_loading(tiny_config, data_dir):
    TinyCaptions(data_dir=str(data_dir)).download_and_prepare()
    bad = tiny_config(dataset="tfds", tfds_name="tiny_captions", image_key="img", text_key="captions/text")
    with pytest.raises(config_lib.ConfigError, match=r"config\.data\.image_key = 'img': feature 'img' not found; "
                                                     r"available: \['captions', 'image'\]"):
        data.create_input_pipeline(bad, seed=0)


def test_prepare_tool_reports_mistakes_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "glide_jax.data.prepare", "--config", "configs/shapes_base.py",
                           "--config.data.dataset=folder", f"--config.data.folder_path={tmp_path / 'nope'}",
                           f"--config.data.data_dir={tmp_path / 'tfds'}"],
                          capture_output=True, text=True, timeout=300,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (f"error: config.data.folder_path = '{tmp_path / 'nope'}': "
                                                    "no such file or directory")


def test_unknown_catalogue_name_is_one_line_naming_the_key(tiny_config):
    config = tiny_config(dataset="tfds", tfds_name="tiny_caption")
    with pytest.raises(config_lib.ConfigError) as info:
        sources.prepare_dataset(config.data)
    assert str(info.value).startswith("config.data.tfds_name = 'tiny_caption': no such TFDS dataset; "
                                      "did you mean 'tiny_captions'")
    assert "\n" not in str(info.value)  # not TFDS's list of every dataset


@pytest.mark.parametrize("keys, message", [
    ({"image_key": "img"}, r"config\.data\.image_key = 'img': feature 'img' not found"),
    ({"text_key": "captions/words"}, r"config\.data\.text_key = 'captions/words': feature 'words' not found"),
    ({"text_key": "image"}, r"config\.data\.text_key = 'image': expected a string or list of strings"),
])
def test_catalogue_keys_are_checked_before_downloading(tiny_config, monkeypatch, keys, message):
    def download_and_prepare(*args, **kwargs):
        pytest.fail("downloaded before checking config.data.image_key / text_key")

    monkeypatch.setattr(TinyCaptions, "download_and_prepare", download_and_prepare)
    config = tiny_config(**{"dataset": "tfds", "tfds_name": "tiny_captions", "image_key": "image",
                            "text_key": "captions/text", **keys})
    with pytest.raises(config_lib.ConfigError, match=message):
        sources.prepare_dataset(config.data)
    with pytest.raises(config_lib.ConfigError, match=message):
        sources.load_host_split(config.data, "train", 0, 1)


def test_split_smaller_than_the_host_count_names_split_size_and_hosts(tiny_config):
    config = tiny_config(shapes_train_size=4, shapes_validation_size=1)
    assert sources.load_host_split(config.data, "train", 1, 2).num_examples == 2
    with pytest.raises(config_lib.ConfigError, match=r"split 'validation' of glide_shapes has 1 example\(s\), "
                                                     r"fewer than the 2 hosts"):
        sources.load_host_split(config.data, "validation", 0, 2)


def test_folder_build_records_names_that_are_not_utf8_as_skipped(tmp_path, tiny_config, caplog):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in (b"ok", b"caf\xe9"):  # the second a Latin-1 name
        # Written by hand: Pillow 10.0 (the oldest allowed) cannot save to a bytes path.
        with open(os.fsencode(folder) + b"/" + name + b".png", "wb") as file:
            _save(file, np.full((8, 8, 3), 100, np.uint8), format="PNG")
    with caplog.at_level(logging.WARNING, logger="glide_jax"):
        report = sources.prepare_dataset(_folder_config(tiny_config, folder).data)
    assert report["splits"] == {"train": 1} and report["skipped"] == {"train": 1}
    assert report["skipped_files"] == {"train": [f"{folder}/caf\\xe9.png"]}
    # The folder is listed once per build (the fingerprint's listing is the one built), so warned once.
    assert sum("caf\\xe9.png" in rec.getMessage() for rec in caplog.records) == 1


def test_images_smaller_than_the_training_size_are_counted_and_warned_about(tmp_path, tiny_config, caplog):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name, (height, width) in {"small": (20, 50), "tiny": (8, 8), "big": (40, 36), "wide": (32, 90)}.items():
        Image.fromarray(np.full((height, width, 3), 90, np.uint8)).save(folder / f"{name}.png")
    config = _folder_config(tiny_config, folder)  # model.image_size 32
    with caplog.at_level(logging.WARNING, logger="glide_jax"):
        pipe = data.create_input_pipeline(config, seed=0, num_epochs=1)
    assert pipe._host.short_sides == {8: 1, 20: 1, 32: 1, 36: 1}
    warnings = [rec.getMessage() for rec in caplog.records if "upscaled" in rec.getMessage()]
    assert warnings == ["glide_jax.data: 2 of 4 images in the train split have a short side under 32 px; they "
                        "are upscaled to it, which blurs those training targets (remove them from the folder, "
                        "or train at a lower resolution)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="glide_jax"):
        config.model.image_size = 8
        data.create_input_pipeline(config, seed=0, num_epochs=1)
    assert not [rec for rec in caplog.records if "upscaled" in rec.getMessage()]
