"""Robust image loading: any file a user may throw at ``pcnn predict`` becomes an RGB uint8 array or a clear reason
why it was skipped (:class:`ImageLoadError`), never a traceback.

Handled: EXIF orientation, grayscale / bilevel / palette / RGBA / LA / CMYK / YCbCr / 16-bit ("I;16*") / 32-bit
("I", "F") images, truncated or corrupt files, files that are not images at all (whatever their extension), empty
files, and decompression bombs (a pixel-count limit checked from the header, before anything is decoded).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import PCNNError

#: Default limit on width × height (about a 9000×6000 photo is 54 MP); larger images are skipped, not decoded.
MAX_PIXELS = 64_000_000

#: Anything :func:`load_image` accepts.
ImageInput = str | Path | bytes | Image.Image | np.ndarray


class ImageLoadError(PCNNError, ValueError):
    """An input that cannot be used as an image; ``reason`` is a short human-readable explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Pixel data of any depth → uint8.

    uint8 is kept; bool → 0/255; 16-bit data (and wider integers within 0–65535) ÷ 257; floats in [0, 1] × 255;
    data already within 0–255 is kept; anything else (negative values, wider ranges) is min–max stretched.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    a = arr.astype(np.float64)
    finite = np.isfinite(a)
    if not finite.any():
        return np.zeros(arr.shape, np.uint8)
    lo, hi = float(a[finite].min()), float(a[finite].max())
    if np.issubdtype(arr.dtype, np.floating) and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0 and (arr.dtype == np.uint16 or 255 < hi <= 65535) and not np.issubdtype(arr.dtype, np.floating):
        a = a / 257.0
    elif not (lo >= 0 and hi <= 255):
        a = (a - lo) / max(hi - lo, 1e-12) * 255.0
    return np.clip(np.where(finite, a, 0.0) + 0.5, 0, 255).astype(np.uint8)


def _composite(rgba: np.ndarray, background: int = 255) -> np.ndarray:
    """Alpha-composite an RGBA uint8 array over a plain background (white by default)."""
    alpha = rgba[..., 3:4].astype(np.float32) / 255.0
    rgb = rgba[..., :3].astype(np.float32) * alpha + background * (1.0 - alpha)
    return (rgb + 0.5).astype(np.uint8)


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 array (uint8, 16-bit, int, float or bool) → contiguous HxWx3 uint8 RGB."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        gray = _scale_to_uint8(arr)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageLoadError(f"unsupported array shape {arr.shape} (expected HxW, HxWx3 or HxWx4)")
    arr = _scale_to_uint8(arr)
    if arr.shape[2] == 4:
        return _composite(arr)
    return np.ascontiguousarray(arr)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode → HxWx3 uint8 RGB (alpha composited over white, high bit depths scaled)."""
    mode = img.mode
    if mode == "RGB":
        return np.asarray(img, dtype=np.uint8).copy()
    if mode == "L":
        return array_to_rgb(np.asarray(img))
    if mode in ("1",):
        return array_to_rgb(np.asarray(img.convert("L")))
    if mode.startswith("I;16") or mode in ("I", "F"):
        data = np.asarray(img)
        return array_to_rgb(data.astype(np.uint16) if mode.startswith("I;16") else data)
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in img.info):
        return _composite(np.asarray(img.convert("RGBA")))
    try:
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except (ValueError, OSError) as e:
        raise ImageLoadError(f"unsupported image mode {mode!r} ({e})") from None


def _exif_transpose(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a broken EXIF block is ignored (the pixels are still usable)."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - Pillow raises assorted errors for malformed EXIF data
        return img


def open_checked(source: str | Path | bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open an image file (or its bytes) lazily and check its size against ``max_pixels`` before decoding."""
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError("no such file")
        if path.is_dir():
            raise ImageLoadError("is a directory")
        if path.stat().st_size == 0:
            raise ImageLoadError("empty file")
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
    except Image.DecompressionBombError as e:
        raise ImageLoadError(f"image too large ({e}); refusing to decode it") from None
    except UnidentifiedImageError:
        raise ImageLoadError("not an image file (unrecognised format)") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise ImageLoadError(f"unreadable image ({type(e).__name__}: {e})") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        img.close()
        raise ImageLoadError(f"image too large: {width}x{height} = {width * height / 1e6:.1f} MP exceeds the limit "
                             f"of {max_pixels / 1e6:.1f} MP (raise it with --max-pixels)")
    return img


def load_image(image: ImageInput, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``image`` (a path, encoded bytes, a PIL image or an array) to HxWx3 uint8 RGB, upright per EXIF.

    Raises :class:`ImageLoadError` with a short reason for anything unusable (missing, empty, not an image,
    truncated, corrupt, over ``max_pixels``, unsupported mode).
    """
    if isinstance(image, np.ndarray):
        if image.size == 0:
            raise ImageLoadError("empty array")
        if image.ndim not in (2, 3):
            raise ImageLoadError(f"unsupported array shape {image.shape} (expected HxW, HxWx3 or HxWx4)")
        if image.dtype.kind not in "biuf":
            raise ImageLoadError(f"unsupported array dtype {image.dtype} (expected numbers)")
        if image.shape[0] * image.shape[1] > max_pixels:
            raise ImageLoadError(f"image too large: {image.shape[1]}x{image.shape[0]} exceeds {max_pixels} pixels")
        return array_to_rgb(image)
    if isinstance(image, Image.Image):
        if image.size[0] * image.size[1] > max_pixels:
            raise ImageLoadError(f"image too large: {image.size[0]}x{image.size[1]} exceeds {max_pixels} pixels")
        return pil_to_rgb(_exif_transpose(image))
    if not isinstance(image, (str, Path, bytes, bytearray)):
        raise ImageLoadError(f"cannot read an image from a {type(image).__name__}")
    img = open_checked(image, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            img = _exif_transpose(img)
            return pil_to_rgb(img)
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "truncated" in msg.lower():
            raise ImageLoadError(f"truncated image file ({msg})") from None
        raise ImageLoadError(f"corrupt or unsupported image ({type(e).__name__}: {msg})") from None
    except MemoryError:
        raise ImageLoadError("not enough memory to decode this image") from None
    finally:
        img.close()


def save_image(path: str | Path, rgb: np.ndarray, quality: int = 92) -> Path:
    """Write an RGB uint8 array as PNG/JPEG/… (format from the suffix; parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    if path.suffix.lower() in (".jpg", ".jpeg"):
        img.save(path, quality=quality)
    else:
        img.save(path)
    return path


__all__ = ["ImageLoadError", "MAX_PIXELS", "load_image", "open_checked", "pil_to_rgb", "array_to_rgb", "save_image"]
