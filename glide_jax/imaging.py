"""Image files as 8-bit RGB: shared by the data pipeline and sampling (no TensorFlow)."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# Modes whose pixels are wider than 8 bits, or floats.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "La", "RGBa")


def has_alpha(img: Image.Image) -> bool:
    """Whether some pixels of `img` may be transparent (an alpha channel or a transparent colour)."""
    return img.mode in _ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def upright(img: Image.Image) -> Image.Image:
    """`img` turned as its EXIF orientation says (phone photos are stored sideways)."""
    return ImageOps.exif_transpose(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB.

    16- and 32-bit grey levels are scaled to 8 bits (PIL's own conversion
    clips them at 255, which turns a 16-bit photo white); float images in
    [0, 1] are scaled by 255. Transparent pixels are composited onto white,
    not dropped (PIL's conversion would show the colours hidden under them).
    """
    if img.mode in _WIDE_MODES:
        values = np.asarray(img, np.float64)
        top = float(values.max(initial=0.0))
        if img.mode == "F" and top <= 1.0:
            values = values * 255.0
        elif img.mode.startswith("I;16") or top > 255.0:
            values = values / (257.0 if top <= 65535.0 else top / 255.0)
        img = Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), "L")
    if has_alpha(img):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")
