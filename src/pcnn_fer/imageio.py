"""Image decoding shared by training (:mod:`pcnn_fer.data`) and serving (:mod:`pcnn_fer.faces`).

One rule turns a PIL image of any mode into grayscale (``L``) or ``RGB`` pixels, so a file decodes to the same
pixels whether a dataset reader or ``pcnn predict`` reads it:

* EXIF orientation is applied (the image as viewers show it);
* alpha (RGBA, LA, PA, palettes with a transparent entry) is composited over white;
* 16-bit data ("I;16*", and "I" within 0–65535) is divided by 257; floats in [0, 1] are scaled by 255; data already
  within 0–255 is kept; any other range is min–max stretched;
* bilevel images become 0/255 grayscale; everything else (P, CMYK, YCbCr, …) goes through PIL's RGB conversion;
* with ``gray_if_possible``, an RGB result whose three channels are equal is returned as ``L``.

This module imports nothing from :mod:`pcnn_fer.data` or :mod:`pcnn_fer.faces`; each wraps decoding failures in
its own error class (``DatasetError``, ``ImageLoadError``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DECODE_ERRORS", "composite", "decode", "decode_file", "scale_to_uint8", "to_native", "to_rgb_array",
           "upright", "value_range"]

#: What PIL raises for unreadable, truncated, corrupt or oversized files and unsupported conversions.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, SyntaxError, EOFError,
                                                 Image.DecompressionBombError)

_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def value_range(arr: np.ndarray) -> tuple[float, float] | None:
    """(min, max) of the finite values of ``arr``, None when it has none (what :func:`scale_to_uint8` scales by)."""
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    return (float(a[finite].min()), float(a[finite].max())) if finite.any() else None


def scale_to_uint8(arr: np.ndarray, whole_range: tuple[float, float] | None | bool = False) -> np.ndarray:
    """Pixel data of any depth → uint8.

    uint8 is kept; bool → 0/255; 16-bit data (and wider integers within 0–65535) ÷ 257; floats in [0, 1] × 255;
    data already within 0–255 is kept; anything else (negative values, wider ranges) is min–max stretched.
    Non-finite values become 0. ``whole_range``: the :func:`value_range` of the whole image when ``arr`` is one
    strip of it (the strips then scale as the whole image would); by default the range of ``arr`` itself.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    if whole_range is False:
        span = (float(a[finite].min()), float(a[finite].max())) if finite.any() else None
    else:
        span = whole_range
    if span is None:
        return np.zeros(arr.shape, np.uint8)
    lo, hi = span
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0 and (arr.dtype == np.uint16 or 255 < hi <= 65535) and not np.issubdtype(arr.dtype, np.floating):
        a = a / 257.0
    elif not (lo >= 0 and hi <= 255):
        a = (a - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.where(finite, a, 0.0) + 0.5, 0, 255).astype(np.uint8)


def composite(rgba: np.ndarray, background: int = 255) -> np.ndarray:
    """An RGBA uint8 array alpha-composited over a plain background (white by default) → RGB uint8."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
    return (rgb + 0.5).astype(np.uint8)


def upright(img: Image.Image) -> Image.Image:
    """``img`` turned as its EXIF orientation says; a broken EXIF block is ignored (the pixels are still usable)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - Pillow raises assorted errors for malformed EXIF data
        return img


def _is_gray(rgb: np.ndarray) -> bool:
    return bool(np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2]))


def to_native(img: Image.Image, gray_if_possible: bool = True) -> Image.Image:
    """``img`` (any PIL mode, pixels loaded) as mode ``L`` (grayscale sources) or ``RGB``, by the module's rule.

    Raises ValueError or OSError (from PIL) for a mode PIL cannot convert to RGB.
    """
    mode = img.mode
    if mode == "L":
        return img
    if mode == "1":
        return img.convert("L")
    if mode.startswith("I;16") or mode in ("I", "F"):
        data = np.asarray(img)
        return Image.fromarray(scale_to_uint8(data.astype(np.uint16) if mode.startswith("I;16") else data))
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        out = Image.fromarray(composite(np.asarray(img.convert("RGBA"))))
    else:
        out = img if mode == "RGB" else img.convert("RGB")
    if gray_if_possible:
        rgb = np.asarray(out)
        if _is_gray(rgb):
            return Image.fromarray(np.ascontiguousarray(rgb[..., 0]))
    return out


def to_rgb_array(img: Image.Image) -> np.ndarray:
    """``img`` (any PIL mode) as a writable, contiguous HxWx3 uint8 RGB array, by the module's rule."""
    native = to_native(img, gray_if_possible=False)
    arr = np.asarray(native, dtype=np.uint8)
    if arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    return np.array(arr, copy=True, order="C")


def decode(img: Image.Image, gray_if_possible: bool = True) -> Image.Image:
    """Load an opened image's pixels, turn it upright (EXIF) and convert it with :func:`to_native`."""
    img.load()
    return to_native(upright(img), gray_if_possible)


def decode_file(path: Path | str, gray_if_possible: bool = True) -> Image.Image:
    """Decode the image file ``path`` to mode ``L`` or ``RGB`` (see :func:`decode`); raises :data:`DECODE_ERRORS`."""
    with Image.open(path) as img:
        return decode(img, gray_if_possible)
