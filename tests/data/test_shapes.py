"""glide_shapes scenes, captions and masks (numpy only, no TensorFlow)."""

import subprocess
import sys

import numpy as np
import pytest

from glide_jax import config as config_lib
from glide_jax import data
from glide_jax.data import masks, shapes


def test_scene_is_deterministic_and_order_free():
    a, image_a = shapes.generate(3, "train", 17, 64)
    _ = shapes.generate(3, "train", 16, 64)
    b, image_b = shapes.generate(3, "train", 17, 64)
    other, _ = shapes.generate(3, "validation", 17, 64)
    assert a == b and np.array_equal(image_a, image_b)
    assert other != a


def test_caption_names_every_object_and_its_position():
    for index in range(50):
        scene = shapes.sample_scene(shapes.example_rng(0, "train", index))
        assert 1 <= len(scene.objects) <= 3
        for obj in scene.objects:
            assert f"{obj.size} {obj.color} {obj.shape}" in scene.caption
            assert any(p in scene.caption for p in shapes._POSITION_PHRASES[obj.position])
        positions = [o.position for o in scene.objects]
        assert len(set(positions)) == len(positions)


def test_left_right_in_captions_match_pixels():
    """An object said to be on the left is drawn in the left third, and so on."""
    checked = 0
    for index in range(40):
        scene, image = shapes.generate(0, "train", index, 96)
        for obj in scene.objects:
            single = shapes.Scene(scene.background, (obj,), "")
            drawn = np.any(shapes.render(single, 96) != shapes.render(shapes.Scene(scene.background, (), ""), 96), -1)
            xs = np.nonzero(drawn)[1]
            col = shapes.POSITIONS[obj.position][0]
            assert col * 32 - 8 <= xs.mean() <= (col + 1) * 32 + 8, (obj, xs.mean())
            checked += 1
    assert checked > 40


def test_render_is_antialiased_with_plain_background():
    scene = shapes.Scene("grey", (shapes.ShapeObject("circle", "red", "large", "center", (0.5, 0.5), 0.15),), "")
    image = shapes.render(scene, 64)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert tuple(image[0, 0]) == shapes.BACKGROUNDS["grey"]
    assert tuple(image[32, 32]) == shapes.COLORS["red"]
    reds = set(image[..., 0].ravel().tolist())
    assert len(reds) > 5  # edge pixels blend background and colour


def test_every_shape_renders_inside_its_radius():
    for name in shapes.SHAPES:
        obj = shapes.ShapeObject(name, "black", "large", "center", (0.5, 0.5), 0.15)
        drawn = shapes.render(shapes.Scene("beige", (obj,), ""), 128)[..., 0] < 200
        ys, xs = np.nonzero(drawn)
        assert drawn.sum() > 0.02 * 128 * 128, name
        assert np.hypot(xs + 0.5 - 64, ys + 0.5 - 64).max() < 0.15 * 128 * 1.3, name


def test_iter_captions_matches_scenes_without_tensorflow():
    config = config_lib.base_config()
    captions = list(data.iter_captions(config, "validation", limit=5))
    assert captions == [shapes.sample_scene(shapes.example_rng(0, "validation", i)).caption for i in range(5)]
    with pytest.raises(ValueError, match="no split 'test'"):
        list(data.iter_captions(config, "test"))


def test_masks_cover_both_kinds_and_are_seeded():
    spec = masks.MaskSpec(rect_prob=0.5, min_fraction=0.2, max_fraction=0.5, max_strokes=3)
    seeds = np.stack([np.zeros(40, np.int64), np.arange(40)], 1)
    batch = masks.random_masks(seeds, 32, spec)
    assert batch.shape == (40, 32, 32, 1) and batch.dtype == np.float32
    assert set(np.unique(batch)) <= {0.0, 1.0}
    hidden = 1 - batch.mean((1, 2, 3))
    assert np.all(hidden > 0) and np.all(hidden < 1)
    assert np.array_equal(batch, masks.random_masks(seeds, 32, spec))
    rect_only = masks.random_masks(seeds[:8], 32, masks.MaskSpec(rect_prob=1.0, min_fraction=0.25, max_fraction=0.25))
    assert np.allclose(1 - rect_only.mean((1, 2, 3)), (8 * 8) / (32 * 32))


def test_importing_jax_packages_leaves_tensorflow_out():
    code = (
        "import importlib, sys\n"
        "for name in ('glide_jax', 'glide_jax.config', 'glide_jax.models', 'glide_jax.diffusion',"
        " 'glide_jax.sampling', 'glide_jax.text', 'glide_jax.data', 'glide_jax.data.shapes', 'glide_jax.data.masks'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError as err:\n"
        "        if err.name != name: raise\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


def test_stroke_segment_matches_brute_force_distance():
    rng = np.random.default_rng(1)
    centres = np.arange(40) + 0.5
    px, py = np.meshgrid(centres, centres)
    for _ in range(20):
        a, b, width = rng.uniform(-5, 45, 2), rng.uniform(-5, 45, 2), rng.uniform(1, 10)
        hidden = np.zeros((40, 40), bool)
        masks._paint_segment(hidden, a, b, width)
        t = np.clip(((px - a[0]) * (b - a)[0] + (py - a[1]) * (b - a)[1]) / ((b - a) @ (b - a)), 0, 1)
        dist = np.hypot(px - (a[0] + t * (b - a)[0]), py - (a[1] + t * (b - a)[1]))
        np.testing.assert_array_equal(hidden, dist <= width / 2)


def test_max_objects_caps_the_scene_and_keeps_the_default_scenes():
    singles = [shapes.sample_scene(shapes.example_rng(0, "train", i), max_objects=1) for i in range(30)]
    assert all(len(scene.objects) == 1 for scene in singles)
    assert any(len(scene.objects) > 1 for scene in shapes.iter_scenes(0, "train", 30))
    # The cap of 3 is the default: the same draws, so existing builds keep their scenes.
    assert (list(shapes.iter_scenes(0, "train", 5, max_objects=3)) == list(shapes.iter_scenes(0, "train", 5)))
    with pytest.raises(ValueError, match="max_objects 4"):
        shapes.sample_scene(shapes.example_rng(0, "train", 0), max_objects=4)
