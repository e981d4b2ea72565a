"""PNG output, grids and inpainting inputs (glide_jax.sampling.images)."""

import numpy as np
import pytest
from PIL import Image

from glide_jax.sampling import images
from glide_jax.sampling.errors import SamplingError


def test_to_uint8_matches_glide_rounding():
    x = np.array([-1.5, -1.0, -0.5, 0.0, 0.999, 1.0, 2.0], np.float32).reshape(1, 1, 7, 1)
    got = images.to_uint8(np.repeat(x, 3, axis=-1))[..., 0].ravel()
    # round((x + 1) * 127.5), clipped; 0.0 -> 127.5 rounds half to even -> 128.
    np.testing.assert_array_equal(got, [0, 0, 64, 128, 255, 255, 255])


def test_png_round_trip(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    images.save_png(tmp_path / "a.png", image)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)


def test_make_grid_layout():
    tiles = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (10, 20, 30)])
    grid = images.make_grid(tiles, pad=1, fill=0)
    assert grid.shape == (2 * 5 + 1, 2 * 5 + 1, 3)  # 3 tiles -> 2 x 2
    assert grid[1, 1, 0] == 10 and grid[1, 6, 0] == 20 and grid[6, 1, 0] == 30
    assert grid[6, 6, 0] == 0 and grid[0, 0, 0] == 0
    assert images.make_grid(tiles, ncols=3, pad=0).shape == (4, 12, 3)


def _write(path, array, mode):
    Image.fromarray(array, mode=mode).save(path)
    return path


def test_load_mask_white_keeps_and_downscales(tmp_path):
    grey = np.zeros((32, 32), np.uint8)
    grey[:16] = 255  # top half kept
    path = _write(tmp_path / "m.png", grey, "L")
    mask = images.load_mask(path, 8, expected_size=(32, 32))
    assert mask.shape == (8, 8, 1) and mask.dtype == np.float32
    np.testing.assert_array_equal(mask[:4, :, 0], 1.0)
    np.testing.assert_array_equal(mask[4:, :, 0], 0.0)
    up = images.upscale_mask(mask, 32)
    np.testing.assert_array_equal(up[..., 0], grey >= 128)


def test_mask_size_mismatch_is_an_error(tmp_path):
    path = _write(tmp_path / "m.png", np.zeros((10, 12), np.uint8), "L")
    with pytest.raises(SamplingError, match=r"m\.png is 12x10 but its image is 16x16"):
        images.load_mask(path, 8, expected_size=(16, 16))


def test_all_kept_mask_warns(tmp_path):
    path = _write(tmp_path / "m.png", np.full((8, 8), 255, np.uint8), "L")
    with pytest.warns(UserWarning, match="keeps every pixel"):
        images.load_mask(path, 8)


def test_unreadable_and_missing_images(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(SamplingError, match=r"image .*bad\.png is not a readable image"):
        images.load_image(bad, 8)
    with pytest.raises(SamplingError, match=r"mask .*nope\.png does not exist"):
        images.load_mask(tmp_path / "nope.png", 8)


def test_load_inpaint_inputs(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (20, 20, 3), dtype=np.uint8)
    image_path = _write(tmp_path / "i.png", rgb, "RGB")
    grey = np.full((20, 20), 255, np.uint8)
    grey[:, 10:] = 0
    mask_path = _write(tmp_path / "m.png", grey, "L")
    inputs = images.load_inpaint_inputs(image_path, mask_path, 4, 16)
    assert inputs.image.shape == (4, 4, 3) and inputs.image_up.shape == (16, 16, 3)
    assert inputs.image.min() >= -1.0 and inputs.image.max() <= 1.0
    np.testing.assert_array_equal(inputs.mask[:, :, 0], [[1, 1, 0, 0]] * 4)
    np.testing.assert_array_equal(inputs.mask_up, images.upscale_mask(inputs.mask, 16))
    # Same resize as the notebook's read_image: PIL bicubic, then /127.5 - 1.
    expected = np.asarray(Image.fromarray(rgb).resize((4, 4), Image.BICUBIC), np.float32) / 127.5 - 1
    np.testing.assert_allclose(inputs.image, expected)


def test_transparency_grey_masks_and_non_square_images(tmp_path):
    import warnings as warnings_lib

    # A mask "erased to transparent": transparent = generate, whatever colour it hides.
    rgba = np.full((8, 8, 4), 255, np.uint8)
    rgba[4:, :, 3] = 0
    Image.fromarray(rgba).save(tmp_path / "mask.png")
    mask = images.load_mask(tmp_path / "mask.png", 8)
    assert mask[:4].min() == 1.0 and mask[4:].max() == 0.0
    grey = np.full((8, 8), 100, np.uint8)
    grey[:, :4] = 255
    Image.fromarray(grey).save(tmp_path / "grey.png")
    with pytest.warns(UserWarning, match="50% of its pixels are grey; thresholded"):
        images.load_mask(tmp_path / "grey.png", 8)
    # A source image: transparent pixels become white; a non-square one is stretched, with a warning.
    source = np.zeros((8, 8, 4), np.uint8)
    source[..., 0] = 255
    Image.fromarray(source).save(tmp_path / "clear.png")
    with warnings_lib.catch_warnings():
        warnings_lib.simplefilter("error")
        assert np.all(images.load_image(tmp_path / "clear.png", 4) == 1.0)
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(tmp_path / "wide.png")
    with pytest.warns(UserWarning, match="is 16x8: stretched to 4x4"):
        images.load_image(tmp_path / "wide.png", 4)


def test_source_images_are_read_as_the_training_data_is(tmp_path):
    # 16-bit grey: scaled to 8 bits, not clipped to white by PIL's conversion.
    Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(tmp_path / "g16.png")
    np.testing.assert_allclose(images.load_image(tmp_path / "g16.png", 8), 128 / 127.5 - 1.0, atol=1e-6)
    # A phone photo stored sideways with an EXIF orientation: read upright, so that a
    # mask drawn on the upright picture has its size.
    tall = np.zeros((20, 10, 3), np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.fromarray(tall.transpose(1, 0, 2)).save(tmp_path / "sideways.jpg", exif=exif)
    assert images.image_size(tmp_path / "sideways.jpg") == (10, 20)
    Image.fromarray(np.full((20, 10), 255, np.uint8)).save(tmp_path / "mask.png")
    inputs = images.load_inpaint_inputs(tmp_path / "sideways.jpg", tmp_path / "mask.png", 8)
    assert inputs.image.shape == (8, 8, 3) and inputs.mask.min() == 1.0
