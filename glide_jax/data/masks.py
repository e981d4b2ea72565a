"""Random inpainting masks: rectangles and free-form brush strokes (numpy only).

A mask is float32 `(H, W, 1)` with 1 where the pixel is known (kept) and 0 where
the model must fill it in, the convention of ARCHITECTURE.md's batch contract.

Distribution (all knobs in config.data):
  * with probability `mask_rect_prob`, one axis-aligned rectangle is hidden.
    Its height and width are drawn independently and uniformly from
    [`mask_min_fraction`, `mask_max_fraction`] of the image side, and its
    top-left corner uniformly among the positions where it fits;
  * otherwise 1..`mask_max_strokes` free-form strokes are hidden. A stroke is a
    polyline of 2-5 vertices: it starts at a uniform point and each segment
    turns by a uniform angle and runs 10%-40% of the side; the brush width is
    uniform in [4%, 12%] of the side.
Each mask is a pure function of its 2-integer seed, so the pipeline stays
deterministic and resumable.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskSpec:
    """Parameters of the mask distribution; see the module docstring."""

    rect_prob: float = 0.5
    min_fraction: float = 0.1
    max_fraction: float = 0.6
    max_strokes: int = 4

    @classmethod
    def from_config(cls, data_config) -> "MaskSpec":
        return cls(
            rect_prob=float(data_config.mask_rect_prob),
            min_fraction=float(data_config.mask_min_fraction),
            max_fraction=float(data_config.mask_max_fraction),
            max_strokes=int(data_config.mask_max_strokes),
        )


def _rectangle(rng: np.random.Generator, size: int, spec: MaskSpec) -> np.ndarray:
    known = np.ones((size, size), np.float32)
    lo = max(1, int(round(spec.min_fraction * size)))
    hi = max(lo, int(round(spec.max_fraction * size)))
    height, width = (int(v) for v in rng.integers(lo, hi + 1, size=2))
    top = int(rng.integers(0, size - height + 1))
    left = int(rng.integers(0, size - width + 1))
    known[top : top + height, left : left + width] = 0.0
    return known


def _paint_segment(hidden: np.ndarray, a: np.ndarray, b: np.ndarray, width: float) -> None:
    """Marks pixels whose centre lies within width/2 of the segment a-b (points as (x, y)).

    Only the segment's bounding box, grown by the brush radius, is visited,
    which keeps 256 px masks cheap.
    """
    size, radius = hidden.shape[0], width / 2
    x0, x1 = (max(0, int(np.floor(min(a[0], b[0]) - radius))), min(size, int(np.ceil(max(a[0], b[0]) + radius)) + 1))
    y0, y1 = (max(0, int(np.floor(min(a[1], b[1]) - radius))), min(size, int(np.ceil(max(a[1], b[1]) + radius)) + 1))
    if x0 >= x1 or y0 >= y1:
        return
    px, py = np.meshgrid(np.arange(x0, x1, dtype=np.float64) + 0.5, np.arange(y0, y1, dtype=np.float64) + 0.5)
    ab = b - a
    length2 = float(ab @ ab) or 1e-12
    t = np.clip(((px - a[0]) * ab[0] + (py - a[1]) * ab[1]) / length2, 0.0, 1.0)
    dx, dy = px - (a[0] + t * ab[0]), py - (a[1] + t * ab[1])
    hidden[y0:y1, x0:x1] |= dx * dx + dy * dy <= radius * radius


def _strokes(rng: np.random.Generator, size: int, spec: MaskSpec) -> np.ndarray:
    hidden = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, spec.max_strokes + 1))):
        width = rng.uniform(0.04, 0.12) * size
        point = rng.uniform(0, size, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(1, 5))):
            angle += rng.uniform(-np.pi / 2, np.pi / 2)
            step = rng.uniform(0.1, 0.4) * size
            nxt = np.clip(point + step * np.array([np.cos(angle), np.sin(angle)]), 0, size)
            _paint_segment(hidden, point, nxt, width)
            point = nxt
    return (~hidden).astype(np.float32)


def random_mask(seed, size: int, spec: MaskSpec) -> np.ndarray:
    """One mask.

    Args:
      seed: sequence of ints seeding this mask alone (negative ones are taken mod 2**64).
      size: image height and width.
      spec: the distribution.

    Returns:
      (size, size, 1) float32, 1 = known pixel, 0 = to be inpainted.
    """
    rng = np.random.default_rng([int(s) % 2**64 for s in seed])  # TF seeds are signed int64
    if rng.uniform() < spec.rect_prob:
        known = _rectangle(rng, size, spec)
    else:
        known = _strokes(rng, size, spec)
    return known[..., None]


def random_masks(seeds: np.ndarray, size: int, spec: MaskSpec) -> np.ndarray:
    """Masks for a batch: seeds (B, 2) ints -> (B, size, size, 1) float32."""
    seeds = np.asarray(seeds)
    if seeds.ndim != 2:
        raise ValueError(f"seeds must be (B, 2), got shape {seeds.shape}")
    out = np.empty((seeds.shape[0], size, size, 1), np.float32)
    for i, seed in enumerate(seeds):
        out[i] = random_mask(seed, size, spec)
    return out
