"""The preview rows of training's sample grids (glide_jax.train.samples)."""

import numpy as np

from glide_jax import config as config_lib
from glide_jax.train import samples


def test_preview_rows_are_the_first_examples_conditioning(make_config):
    config = make_config("upsample_inpaint")
    config.train.sample_prompts = ("one", "two")
    size, low, length, rows = config.model.image_size, config_lib.low_res_size(config), config.text.text_ctx, 4
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (rows, size, size, 3)).astype(np.float32),
             "tokens": rng.integers(0, 100, (rows, length)).astype(np.int32),
             "mask": rng.uniform(size=(rows, length)) < 0.5,
             "low_res": rng.uniform(-1, 1, (rows, low, low, 3)).astype(np.float32),
             "inpaint_mask": (rng.uniform(size=(rows, size, size, 1)) < 0.5).astype(np.float32)}
    preview = samples.preview_rows(config, batch)
    assert sorted(preview) == ["inpaint_image", "inpaint_mask", "low_res", "mask", "tokens"]
    for key in ("tokens", "mask", "low_res", "inpaint_mask"):
        np.testing.assert_array_equal(preview[key], batch[key][:2])
    np.testing.assert_array_equal(preview["inpaint_image"], batch["image"][:2] * batch["inpaint_mask"][:2])
    assert all(isinstance(value, np.ndarray) for value in preview.values())
