"""Memory of decoded uploads in ``pcnn serve``: the pixel count read from the image header before anything is
decoded, a bound on how many images are decoded and analysed at once, and giving freed memory back to the system.

A 200 KB PNG can hold 64 MP of flat colour: about 0.6 GB while Pillow decodes it and it is converted to an RGB
array. The server therefore checks the header against its pixel limit (413 when over), lets at most
``max_decodes`` images be decoded and recognised at the same time, and after a large image asks glibc to return
the freed heap pages (``malloc_trim``), which it otherwise keeps for the process. Measured numbers: docs/deploy.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import io
import os
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from PIL import Image

from ..errors import UsageError
from ..faces.imageio import ImageLoadError

#: Images of at least this many pixels are followed by :func:`release_memory` (smaller ones leave little behind).
TRIM_PIXELS = 4_000_000


class ImageTooLargeError(ImageLoadError):
    """An upload whose header declares more pixels than the server's limit (answered with 413)."""


def default_max_decodes() -> int:
    """The number of CPU cores this process may use (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def header_pixels(data: bytes, max_pixels: int) -> int | None:
    """Width × height from the image header of ``data`` (nothing is decoded), or None when Pillow cannot identify
    it (the decoder then reports why). Raises :class:`ImageTooLargeError` above ``max_pixels``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image too large: {str(e).split(',')[0]} (Pillow's decompression-bomb limit)"
                                 ) from None
    except Exception:  # noqa: BLE001 - unidentified, truncated, corrupt: load_image gives the reason
        return None
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image too large: {width}x{height} = {width * height / 1e6:.1f} MP exceeds the "
                                 f"server's limit of {max_pixels / 1e6:.1f} MP (pcnn serve --max-pixels)")
    return width * height


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None on other C libraries."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def release_memory() -> bool:
    """Return freed heap memory to the operating system (glibc ``malloc_trim(0)``); False where unavailable."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class DecodeSlots:
    """At most ``limit`` images decoded and analysed at once; counts the current and the peak number."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise UsageError(f"max_decodes must be at least 1, got {limit}")
        self.limit = int(limit)
        self._slots = threading.BoundedSemaphore(self.limit)
        self._lock = threading.Lock()
        self.active = 0
        self.peak = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """One slot for the duration of the block (waits while all are taken)."""
        with self._slots:
            with self._lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            try:
                yield
            finally:
                with self._lock:
                    self.active -= 1


__all__ = ["ImageTooLargeError", "DecodeSlots", "header_pixels", "release_memory", "default_max_decodes",
           "TRIM_PIXELS"]
