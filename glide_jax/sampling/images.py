"""Image files for sampling: PNG output, grids, and inpainting inputs.

Images inside the project are float32 NHWC in [-1, 1]; files hold uint8 RGB.
The conversions follow glide-text2im's notebooks: output pixels are
`round((x + 1) * 127.5)` clipped to [0, 255], and a source image is resized
with bicubic filtering and mapped to `pixel / 127.5 - 1`.

Mask convention (inpainting): a mask PNG has the size of its source image;
**white (>= 128 in grey) marks pixels to keep, black marks the region to
generate**. Inside the project a mask is float32 (H, W, 1) with 1 = known,
the convention of glide-text2im and of the fixtures.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from glide_jax import imaging
from glide_jax.sampling.errors import SamplingError


def to_uint8(images) -> np.ndarray:
    """Maps float images in [-1, 1] to uint8 as glide-text2im displays them.

    Args:
      images: float array (..., H, W, 3) in [-1, 1] (values outside are clipped).

    Returns:
      uint8 numpy array of the same shape.
    """
    scaled = np.round((np.asarray(images, np.float32) + 1.0) * 127.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def save_png(path: str | pathlib.Path, image: np.ndarray) -> None:
    """Writes one uint8 (H, W, 3) image as a PNG."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
    Image.fromarray(image, mode="RGB").save(path, format="PNG")


def make_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tiles images row by row into one picture.

    Args:
      images: uint8 (N, H, W, 3), N >= 1.
      ncols: images per row; default ceil(sqrt(N)).
      pad: pixels of `fill` between and around the tiles.
      fill: value of the padding pixels.

    Returns:
      uint8 (rows * (H + pad) + pad, ncols * (W + pad) + pad, 3).
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected (N, H, W, C) images with N >= 1, got shape {images.shape}")
    n, h, w, c = images.shape
    ncols = ncols or math.ceil(math.sqrt(n))
    nrows = math.ceil(n / ncols)
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), fill, images.dtype)
    for i, image in enumerate(images):
        row, col = divmod(i, ncols)
        top, left = pad + row * (h + pad), pad + col * (w + pad)
        grid[top:top + h, left:left + w] = image
    return grid


def _open(path: str | pathlib.Path, what: str) -> Image.Image:
    """Opens an image file upright (by its EXIF orientation); any failure is a one-line SamplingError."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise SamplingError(f"{what} {path} does not exist")
    try:
        image = Image.open(path)
        image.load()
        return imaging.upright(image)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise SamplingError(f"{what} {path} is not a readable image ({exc})") from None


def load_image(path: str | pathlib.Path, size: int) -> np.ndarray:
    """Reads an image as the inpainting notebook does (RGB, bicubic resize to a square).

    A non-square image is stretched to the square, as there, with a warning;
    transparent pixels become white, and 16-bit images are scaled to 8 bits
    (`glide_jax.imaging.to_rgb`, as for the training data).

    Returns:
      float32 (size, size, 3) in [-1, 1].
    """
    image = _open(path, "image")
    if image.width != image.height:
        warnings.warn(f"image {path} is {image.width}x{image.height}: stretched to {size}x{size} (crop it to a "
                      "square first to keep its proportions)", stacklevel=2)
    image = imaging.to_rgb(image).resize((size, size), resample=Image.BICUBIC)
    return np.asarray(image, np.float32) / 127.5 - 1.0


def load_mask(path: str | pathlib.Path, size: int, expected_size: tuple[int, int] | None = None) -> np.ndarray:
    """Reads a keep/generate mask (white = keep) and resizes it to `size`.

    Args:
      path: PNG (any mode; converted to grey, >= 128 counts as white; where
        the PNG has transparency, a transparent pixel (alpha < 128) is to
        generate, as an image "erased to transparent" means).
      size: output side in pixels.
      expected_size: (width, height) the mask must have, normally its source
        image's; a mismatch is an error rather than a silent stretch.

    Returns:
      float32 (size, size, 1), 1 = known pixel, 0 = to generate. Downscaling
      averages each area, then rounds, so a pixel is kept if mostly white.
    """
    image = _open(path, "mask")
    if expected_size is not None and image.size != tuple(expected_size):
        raise SamplingError(f"mask {path} is {image.size[0]}x{image.size[1]} but its image is "
                            f"{expected_size[0]}x{expected_size[1]}; they must have the same size")
    levels = np.asarray(image.convert("L"), np.float32)
    grey = (levels > 32) & (levels < 224)
    if grey.mean() > 0.01:
        warnings.warn(f"mask {path}: {100 * grey.mean():.0f}% of its pixels are grey; thresholded at 50% "
                      "(white = keep, black = generate)", stacklevel=2)
    keep = levels >= 128
    if imaging.has_alpha(image):
        keep &= np.asarray(image.convert("RGBA"), np.uint8)[..., 3] >= 128
    binary = Image.fromarray(keep.astype(np.uint8) * 255, mode="L")
    resized = np.asarray(binary.resize((size, size), resample=Image.BOX), np.float32)
    mask = (resized >= 127.5).astype(np.float32)[..., None]
    if mask.min() == 1.0:
        warnings.warn(f"mask {path} keeps every pixel; nothing will be generated", stacklevel=2)
    elif mask.max() == 0.0:
        warnings.warn(f"mask {path} keeps no pixel; the image is ignored", stacklevel=2)
    return mask


def image_size(path: str | pathlib.Path) -> tuple[int, int]:
    """(width, height) of an image file; SamplingError if unreadable."""
    return _open(path, "image").size


def upscale_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour upscaling of a (h, h, 1) mask to (size, size, 1).

    The upsampler's mask is derived from the base mask this way (as the
    inpainting notebook does with `F.interpolate(mode="nearest")`), so the
    kept region is the same at both resolutions.
    """
    h = mask.shape[0]
    if size % h:
        raise SamplingError(f"upsampler size {size} is not a multiple of the base size {h}")
    factor = size // h
    return np.repeat(np.repeat(mask, factor, axis=0), factor, axis=1)


@dataclasses.dataclass(frozen=True)
class InpaintInputs:
    """The source image and mask at the base (and upsampler) resolution.

    Attributes:
      image: float32 (H, W, 3) in [-1, 1] at the base model's size.
      mask: float32 (H, W, 1), 1 = known.
      image_up, mask_up: the same at the upsampler's size, or None.
    """

    image: np.ndarray
    mask: np.ndarray
    image_up: np.ndarray | None = None
    mask_up: np.ndarray | None = None


def load_inpaint_inputs(image_path, mask_path, size: int, up_size: int | None = None) -> InpaintInputs:
    """Loads an inpainting source image and its mask at one or two resolutions."""
    mask = load_mask(mask_path, size, expected_size=image_size(image_path))
    image = load_image(image_path, size)
    if up_size is None:
        return InpaintInputs(image, mask)
    return InpaintInputs(image, mask, load_image(image_path, up_size), upscale_mask(mask, up_size))
