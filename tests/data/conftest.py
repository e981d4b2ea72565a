"""Tiny datasets shared by the data tests (built once per session in a tmp data_dir)."""

import numpy as np
import pytest
from PIL import Image

from glide_jax import config as config_lib

TRAIN, VALIDATION = 48, 16


def _tiny_config(data_dir, **data):
    """A base-kind config over a 48/16-example, 64 px glide_shapes build."""
    config = config_lib.base_config()
    config.model.image_size = 32
    config.text.text_ctx = 48
    d = config.data
    d.data_dir = str(data_dir)
    d.shapes_train_size, d.shapes_validation_size, d.shapes_resolution = TRAIN, VALIDATION, 64
    d.batch_size, d.shuffle_buffer, d.num_threads, d.caption_dropout = 8, 64, 2, 0.0
    d.update(data)
    return config_lib.validate(config)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


@pytest.fixture(scope="session")
def tiny_config(data_dir):
    """`tiny_config(**data_overrides)` -> a fresh validated config sharing one data_dir."""
    return lambda **data: _tiny_config(data_dir, **data)


@pytest.fixture(scope="session")
def shapes_config(tiny_config):
    """Config whose glide_shapes split is prepared on first use (a second or two)."""
    return tiny_config()


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Six images (one with an empty caption, one without a .txt) and one corrupt file."""
    root = tmp_path_factory.mktemp("folder")
    rng = np.random.default_rng(0)
    for i in range(6):
        size = (40 + 8 * i, 48)  # varying aspect ratios exercise resize + crop
        Image.fromarray(rng.integers(0, 256, size + (3,), dtype=np.uint8)).save(root / f"img{i}.png")
        if i != 5:
            (root / f"img{i}.txt").write_text("" if i == 2 else f"photo number {i}\n")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "broken.txt").write_text("a caption that must never appear")
    return root
