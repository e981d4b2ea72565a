"""glide_shapes scenes: 1-3 coloured shapes on a plain background, with captions.

`max_objects` caps the count (1 makes the single-shape scenes of the CPU demo).

Pure numpy (no TensorFlow), so `iter_captions` and tests can use it without
building a dataset. Every scene is a function of `(seed, split, index)` alone,
which makes the dataset deterministic and lets examples be generated in any
order.

Geometry: the image is split into a 3x3 grid; each object sits in its own cell
(jittered a little), so the caption's position words ("on the left", "at the
bottom", "in the top right corner") are true of the picture. Sizes are radii as
a share of the image side. Rendering is anti-aliased analytically: each shape
is a signed distance field and a pixel's coverage is `clip(0.5 - d, 0, 1)`
with `d` in pixels, which matches supersampling at a fraction of its cost.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Iterator, Sequence

import numpy as np

SHAPES = ("circle", "square", "triangle", "diamond", "pentagon", "hexagon", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (240, 210, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
    "black": (20, 20, 20),
    "white": (250, 250, 250),
}
COLOR_NAMES = tuple(COLORS)
BACKGROUNDS = {"grey": (150, 150, 150), "beige": (225, 210, 180), "teal": (60, 130, 130)}
BACKGROUND_NAMES = tuple(BACKGROUNDS)
SIZES = {"small": 0.07, "medium": 0.11, "large": 0.15}  # radius / image side
SIZE_NAMES = tuple(SIZES)
# Grid cells (column, row) with 0 = left/top. Names are what captions say.
POSITIONS = {
    "top left": (0, 0), "top": (1, 0), "top right": (2, 0),
    "left": (0, 1), "center": (1, 1), "right": (2, 1),
    "bottom left": (0, 2), "bottom": (1, 2), "bottom right": (2, 2),
}
POSITION_NAMES = tuple(POSITIONS)
_POSITION_PHRASES = {
    "top left": ("in the top left corner", "at the top left"),
    "top": ("at the top", "at the top of the image"),
    "top right": ("in the top right corner", "at the top right"),
    "left": ("on the left", "on the left side"),
    "center": ("in the center", "in the middle"),
    "right": ("on the right", "on the right side"),
    "bottom left": ("in the bottom left corner", "at the bottom left"),
    "bottom": ("at the bottom", "at the bottom of the image"),
    "bottom right": ("in the bottom right corner", "at the bottom right"),
}
_JITTER = 0.03  # max offset of an object centre from its cell centre, share of side
SPLITS = ("train", "validation")
MAX_OBJECTS = 3  # the most objects a scene can hold (and the default cap)


@dataclasses.dataclass(frozen=True)
class ShapeObject:
    """One object of a scene; `center` is (x, y) as a share of the image side."""

    shape: str
    color: str
    size: str
    position: str
    center: tuple[float, float]
    radius: float


@dataclasses.dataclass(frozen=True)
class Scene:
    """A whole example: background, objects and the caption describing them."""

    background: str
    objects: tuple[ShapeObject, ...]
    caption: str


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of example `index` of `split`; independent of generation order."""
    if split not in SPLITS:
        raise ValueError(f"glide_shapes split {split!r}: must be one of {', '.join(SPLITS)}")
    split_id = zlib.crc32(split.encode())
    return np.random.default_rng([seed, split_id, index])


def sample_scene(rng: np.random.Generator, max_objects: int = MAX_OBJECTS) -> Scene:
    """Draws 1 to `max_objects` objects in distinct grid cells, their attributes and a caption."""
    if not 1 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"glide_shapes max_objects {max_objects!r}: must be 1 to {MAX_OBJECTS}")
    count = int(rng.integers(1, max_objects + 1))
    cells = rng.choice(len(POSITION_NAMES), size=count, replace=False)
    background = BACKGROUND_NAMES[int(rng.integers(len(BACKGROUND_NAMES)))]
    objects = []
    for cell in cells:
        position = POSITION_NAMES[int(cell)]
        col, row = POSITIONS[position]
        jitter = rng.uniform(-_JITTER, _JITTER, size=2)
        size = SIZE_NAMES[int(rng.integers(len(SIZE_NAMES)))]
        objects.append(
            ShapeObject(
                shape=SHAPES[int(rng.integers(len(SHAPES)))],
                color=COLOR_NAMES[int(rng.integers(len(COLOR_NAMES)))],
                size=size,
                position=position,
                center=(float((col + 0.5) / 3 + jitter[0]), float((row + 0.5) / 3 + jitter[1])),
                radius=SIZES[size],
            )
        )
    return Scene(background, tuple(objects), compose_caption(objects, background, rng))


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _describe(obj: ShapeObject, rng: np.random.Generator) -> str:
    phrases = _POSITION_PHRASES[obj.position]
    where = phrases[int(rng.integers(len(phrases)))]
    return f"{_article(obj.size)} {obj.size} {obj.color} {obj.shape} {where}"


def compose_caption(objects: Sequence[ShapeObject], background: str, rng: np.random.Generator) -> str:
    """A compositional caption in one of several phrasings.

    E.g. "a large red circle on the left and a small blue square at the bottom".
    The object order is shuffled so that no phrasing ties order to position.
    """
    order = rng.permutation(len(objects))
    parts = [_describe(objects[int(i)], rng) for i in order]
    body = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    template = int(rng.integers(4))
    if template == 0:
        return body
    if template == 1:
        return f"{body} on a {background} background"
    if template == 2:
        return f"a picture of {body}"
    return f"there is {body}"


def _polygon_sdf(px, py, cx, cy, radius, sides: int, rotation: float) -> np.ndarray:
    """Signed distance (in the units of px) to a regular convex polygon, circumradius `radius`."""
    apothem = radius * np.cos(np.pi / sides)
    dist = None
    for k in range(sides):
        angle = rotation + (2 * k + 1) * np.pi / sides  # outward normal of edge k
        d = (px - cx) * np.cos(angle) + (py - cy) * np.sin(angle) - apothem
        dist = d if dist is None else np.maximum(dist, d)
    return dist


def shape_sdf(obj: ShapeObject, px: np.ndarray, py: np.ndarray, side: int) -> np.ndarray:
    """Signed distance in pixels from pixel centres (px, py) to the object; < 0 inside."""
    cx, cy, r = obj.center[0] * side, obj.center[1] * side, obj.radius * side
    dx, dy = px - cx, py - cy
    if obj.shape == "circle":
        return np.sqrt(dx * dx + dy * dy) - r
    if obj.shape == "square":  # axis-aligned, half side r * 0.85 so areas roughly match
        return np.maximum(np.abs(dx), np.abs(dy)) - 0.85 * r
    if obj.shape == "diamond":
        return (np.abs(dx) + np.abs(dy) - 1.1 * r) / np.sqrt(2.0)
    if obj.shape == "triangle":  # pointing up; edge normals at 90, 210, 330 degrees
        return _polygon_sdf(px, py, cx, cy + 0.2 * r, 1.15 * r, 3, np.pi / 6)
    if obj.shape == "pentagon":
        return _polygon_sdf(px, py, cx, cy, r, 5, 3 * np.pi / 10)  # a vertex points up
    if obj.shape == "hexagon":
        return _polygon_sdf(px, py, cx, cy, r, 6, 0.0)
    if obj.shape == "cross":  # union of two bars
        bar_h = np.maximum(np.abs(dx) - r, np.abs(dy) - 0.35 * r)
        bar_v = np.maximum(np.abs(dx) - 0.35 * r, np.abs(dy) - r)
        return np.minimum(bar_h, bar_v)
    raise ValueError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")


def render(scene: Scene, side: int) -> np.ndarray:
    """Renders the scene anti-aliased.

    Args:
      scene: the scene to draw; later objects are drawn over earlier ones.
      side: image height and width in pixels.

    Returns:
      (side, side, 3) uint8 RGB image.
    """
    coords = np.arange(side, dtype=np.float32) + 0.5
    image = np.empty((side, side, 3), np.float32)
    image[:] = BACKGROUNDS[scene.background]
    for obj in scene.objects:
        # Only the object's bounding box (plus a pixel of margin) can change.
        reach = 1.3 * obj.radius * side + 2
        x0, x1 = (max(0, int(obj.center[0] * side - reach)), min(side, int(obj.center[0] * side + reach) + 1))
        y0, y1 = (max(0, int(obj.center[1] * side - reach)), min(side, int(obj.center[1] * side + reach) + 1))
        px, py = np.meshgrid(coords[x0:x1], coords[y0:y1])
        coverage = np.clip(0.5 - shape_sdf(obj, px, py, side), 0.0, 1.0)[..., None]
        color = np.asarray(COLORS[obj.color], np.float32)
        patch = image[y0:y1, x0:x1]
        image[y0:y1, x0:x1] = patch + coverage * (color - patch)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def generate(seed: int, split: str, index: int, side: int,
             max_objects: int = MAX_OBJECTS) -> tuple[Scene, np.ndarray]:
    """Example `index` of `split`: its scene and its (side, side, 3) uint8 image."""
    scene = sample_scene(example_rng(seed, split, index), max_objects)
    return scene, render(scene, side)


def iter_scenes(seed: int, split: str, count: int, max_objects: int = MAX_OBJECTS) -> Iterator[Scene]:
    """The scenes (without images) of examples 0..count-1 of `split`."""
    for index in range(count):
        yield sample_scene(example_rng(seed, split, index), max_objects)
