"""Robust image loading: any file a user may throw at ``pcnn predict`` becomes an RGB uint8 array or a clear reason
why it was skipped (:class:`ImageLoadError`), never a traceback.

Handled: EXIF orientation, grayscale / bilevel / palette / RGBA / LA / CMYK / YCbCr / 16-bit ("I;16*") / 32-bit
("I", "F") images, truncated or corrupt files, files that are not images at all (whatever their extension), empty
files, and decompression bombs (a pixel-count limit checked from the header, before anything is decoded).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..defaults import MAX_PIXELS
from ..errors import PCNNError
from ..imageio import composite, scale_to_uint8, to_rgb_array, upright

#: Anything :func:`load_image` accepts.
ImageInput = str | Path | bytes | Image.Image | np.ndarray


class ImageLoadError(PCNNError, ValueError):
    """An input that cannot be used as an image; ``reason`` is a short human-readable explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def array_to_rgb(arr: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 array (uint8, 16-bit, int, float or bool) → contiguous HxWx3 uint8 RGB."""
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        gray = scale_to_uint8(arr)
        return np.ascontiguousarray(np.repeat(gray[..., None], 3, axis=2))
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ImageLoadError(f"unsupported array shape {arr.shape} (expected HxW, HxWx3 or HxWx4)")
    arr = scale_to_uint8(arr)
    if arr.shape[2] == 4:
        return composite(arr)
    return np.ascontiguousarray(arr)


def pil_to_rgb(img: Image.Image) -> np.ndarray:
    """A PIL image of any mode → HxWx3 uint8 RGB (alpha composited over white, high bit depths scaled).

    The conversion is :func:`pcnn_fer.imageio.to_rgb_array`, the rule dataset readers decode training images by.
    """
    try:
        return to_rgb_array(img)
    except (ValueError, OSError) as e:
        raise ImageLoadError(f"unsupported image mode {img.mode!r} ({e})") from None


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
        return pil_to_rgb(upright(image))
    if not isinstance(image, (str, Path, bytes, bytearray)):
        raise ImageLoadError(f"cannot read an image from a {type(image).__name__}")
    img = open_checked(image, max_pixels)
    with decoding(img):
        img.load()
        return pil_to_rgb(upright(img))


@contextlib.contextmanager
def decoding(img: Image.Image) -> Iterator[None]:
    """Decode ``img`` inside: Pillow's large-image warning silenced (``max_pixels`` was checked when it was opened),
    its errors turned into one-line :class:`ImageLoadError` reasons, and the image closed afterwards."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except ImageLoadError:
        raise
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise decode_error(e) from None
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


def decode_error(e: BaseException) -> ImageLoadError:
    """The :class:`ImageLoadError` for an error Pillow raised while decoding (truncated, or corrupt/unsupported)."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "truncated" in msg.lower():
        return ImageLoadError(f"truncated image file ({msg})")
    return ImageLoadError(f"corrupt or unsupported image ({type(e).__name__}: {msg})")


__all__ = ["ImageLoadError", "MAX_PIXELS", "decode_error", "decoding", "load_image", "open_checked", "pil_to_rgb",
           "array_to_rgb", "save_image"]
