"""Memory of decoded uploads in ``pcnn serve``: what an upload will cost, read from its image header before anything
is decoded; a budget that admits decodes by that cost; a decoder that needs less memory; giving freed memory back.

A 200 KB PNG can hold 64 MP of flat colour. Decoded the usual way (:func:`~pcnn_fer.faces.imageio.load_image`) it
peaks at about 14 bytes per pixel (0.9 GB): Pillow's 4-byte pixels, the copy that turns it upright when it has no
EXIF orientation, and two array copies; a 16-bit one at about 40 (the scaling rule works on the whole image in
float64). :func:`decode_rgb` gives the same pixels at about 7 bytes per pixel whatever the mode (no upright copy;
the array filled strip by strip; 16-bit, 32-bit and float images in two passes over strips). Then:

* :func:`inspect_upload` reads width, height and mode from the header (413 above ``max_pixels``) and estimates the
  upload's peak memory (:func:`upload_cost`);
* :class:`DecodeBudget` admits at most ``limit`` decodes at once whose estimates add up to at most the memory
  budget minus the server's own resident memory (measured whenever no decode runs), first come first served; the
  others wait (without a thread: :meth:`DecodeBudget.admit` is async) with only their spooled upload in memory;
* after a large image the freed heap pages go back to the system (``malloc_trim``); glibc otherwise keeps them.

Measured numbers: docs/deploy.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import io
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps

from ..engine.cores import usable_cpus
from ..errors import UsageError
from ..faces.imageio import ImageLoadError, decoding, open_checked
from ..imageio import composite, scale_to_uint8, value_range

#: Images of at least this many pixels are followed by :func:`release_memory` (smaller ones leave little behind).
TRIM_PIXELS = 4_000_000
MIB = 2**20
#: Memory an upload needs whatever its size: the face detector's working memory (dlib's CNN fallback runs on a
#: copy of at most 0.35 MP) and allocator slack (measured, docs/deploy.md).
FIXED_COST = 160 * MIB
#: Peak bytes per pixel of :func:`decode_rgb` plus detection, by Pillow mode (measured on flat PNGs and TIFFs,
#: rounded up; docs/deploy.md): Pillow's pixels (1, 2 or 4 bytes) + the 3-byte array; high-bit-depth modes are
#: converted strip by strip too.
BYTES_PER_PIXEL = {"1": 6.0, "L": 6.0, "P": 6.0, "I;16": 7.0, "I;16B": 7.0, "I;16L": 7.0, "I;16N": 7.0,
                   "I": 9.0, "F": 9.0}
DEFAULT_BYTES_PER_PIXEL = 9.0  # RGB, RGBA, CMYK, YCbCr, LA, ...: 4-byte Pillow pixels + the 3-byte array
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_STRIP_BYTES = 4 * MIB  # rows of the output array converted at a time


class ImageTooLargeError(ImageLoadError):
    """An upload whose header declares more pixels than the server's limit (answered with 413)."""


class DecodeQueueFull(Exception):
    """A decode that would have to wait while ``waiting`` others already do, the most allowed (answered with 503);
    ``retry_after``: the seconds the queue is expected to take."""

    def __init__(self, waiting: int, retry_after: float) -> None:
        super().__init__(f"{waiting} uploads already wait for a decode")
        self.waiting, self.retry_after = waiting, retry_after


def default_max_decodes() -> int:
    """The number of CPU cores this process may use (its affinity), at least 1."""
    return max(1, len(usable_cpus()))


def rss_bytes() -> int | None:
    """This process's resident memory in bytes (``/proc/self/statm``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def upload_cost(width: int, height: int, mode: str, size: int = 0) -> int:
    """Estimated peak memory (bytes) of decoding and analysing a ``width``×``height`` image of Pillow ``mode``
    whose upload is ``size`` bytes."""
    return int(width * height * BYTES_PER_PIXEL.get(mode, DEFAULT_BYTES_PER_PIXEL)) + FIXED_COST + int(size)


@dataclass(frozen=True)
class Upload:
    """What an upload's header says: its size, Pillow mode and the estimated peak memory of its decode."""

    width: int
    height: int
    mode: str
    cost: int

    @property
    def pixels(self) -> int:
        """Width × height."""
        return self.width * self.height


def inspect_upload(source: bytes | BinaryIO, max_pixels: int) -> Upload | None:
    """Width, height and mode from the image header of ``source`` (bytes or a seekable file, left at its start;
    nothing is decoded) and the estimated cost; None when Pillow cannot identify it (the decoder then says why).
    Raises :class:`ImageTooLargeError` above ``max_pixels``."""
    if isinstance(source, (bytes, bytearray)):
        fp: BinaryIO = io.BytesIO(source)
        size = len(source)
    else:
        fp = source
        size = fp.seek(0, os.SEEK_END)
        fp.seek(0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as img:
                (width, height), mode = img.size, img.mode
    except Image.DecompressionBombError as e:
        raise ImageTooLargeError(f"image too large: {str(e).split(',')[0]} (Pillow's decompression-bomb limit)"
                                 ) from None
    except Exception:  # noqa: BLE001 - unidentified, truncated, corrupt: the decoder gives the reason
        return None
    finally:
        fp.seek(0)
    if width * height > max_pixels:
        raise ImageTooLargeError(f"image too large: {width}x{height} = {width * height / 1e6:.1f} MP exceeds the "
                                 f"server's limit of {max_pixels / 1e6:.1f} MP (pcnn serve --max-pixels)")
    return Upload(width, height, mode, upload_cost(width, height, mode, size))


def _rows_to_rgb(strip: Image.Image, transparent: bool) -> np.ndarray:
    """One horizontal strip of an upright image → HxWx3 uint8 RGB by the shared decoding rule
    (:func:`pcnn_fer.imageio.to_native`, ``gray_if_possible=False``): every step of it is per pixel."""
    mode = strip.mode
    if mode == "1":
        strip = strip.convert("L")
    elif mode in _ALPHA_MODES or transparent:
        return composite(np.asarray(strip.convert("RGBA")))
    elif mode not in ("L", "RGB"):
        strip = strip.convert("RGB")
    rows = np.asarray(strip)
    return rows[..., None] if rows.ndim == 2 else rows


def _high_depth_rows(strip: Image.Image) -> np.ndarray:
    data = np.asarray(strip)
    return data.astype(np.uint16) if strip.mode.startswith("I;16") else data


def _high_depth_rgb(img: Image.Image, out: np.ndarray) -> np.ndarray:
    """A 16-bit, 32-bit or float image converted into ``out`` strip by strip, by the shared rule
    (:func:`pcnn_fer.imageio.scale_to_uint8`): a first pass finds the value range of the whole image, the second
    scales each strip by it, so no full-size float copy exists."""
    width, height = img.size
    step = max(1, _STRIP_BYTES // (8 * width))  # the rule works in float64
    strips = [(top, min(height, top + step)) for top in range(0, height, step)]
    span: tuple[float, float] | None = None
    for top, bottom in strips:
        part = value_range(_high_depth_rows(img.crop((0, top, width, bottom))))
        if part is not None:
            span = part if span is None else (min(span[0], part[0]), max(span[1], part[1]))
    for top, bottom in strips:
        out[top:bottom] = scale_to_uint8(_high_depth_rows(img.crop((0, top, width, bottom))), span)[..., None]
    return out


def decode_rgb(data: bytes, max_pixels: int) -> np.ndarray:
    """``load_image(data, max_pixels)`` with half the peak memory: the same HxWx3 uint8 RGB pixels (upright per
    EXIF, alpha over white) and the same :class:`ImageLoadError` reasons. The image is turned in place and
    converted strip by strip into the output array (high-bit-depth modes in two passes, :func:`_high_depth_rgb`)."""
    img = open_checked(data, max_pixels)
    with decoding(img):
        img.load()
        try:
            ImageOps.exif_transpose(img, in_place=True)  # as pcnn_fer.imageio.upright, without its copy
        except Exception:  # noqa: BLE001 - a malformed EXIF block is ignored there too
            pass
        width, height = img.size
        out = np.empty((height, width, 3), np.uint8)
        if img.mode.startswith("I;16") or img.mode in ("I", "F"):
            return _high_depth_rgb(img, out)
        transparent = img.mode == "P" and "transparency" in img.info
        step = max(1, _STRIP_BYTES // (3 * width))
        try:
            for top in range(0, height, step):
                bottom = min(height, top + step)
                out[top:bottom] = _rows_to_rgb(img.crop((0, top, width, bottom)), transparent)
        except (ValueError, OSError) as e:
            raise ImageLoadError(f"unsupported image mode {img.mode!r} ({e})") from None
        return out


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


@dataclass(eq=False)
class _Waiter:
    cost: int
    wake: Callable[[], None]
    granted: bool = False


class DecodeBudget:
    """Admits decodes first come first served: at most ``limit`` at once, and (with ``memory`` bytes) only while
    their estimated costs add up to at most ``memory`` minus the process's own resident memory when no decode runs
    (``baseline()``, measured at start and each time the last running decode ends). One decode is always admitted
    when none runs, so an image costlier than the budget is decoded alone rather than never. Thread-safe:
    :meth:`hold` blocks a thread, :meth:`admit` awaits in the event loop."""

    def __init__(self, limit: int, memory: int | None = None,
                 baseline: Callable[[], int | None] = rss_bytes) -> None:
        if limit < 1:
            raise UsageError(f"max_decodes must be at least 1, got {limit}")
        if memory is not None and memory < 1:
            raise UsageError(f"the memory budget must be positive, got {memory} bytes")
        self.limit, self.memory, self._measure = int(limit), memory, baseline
        self._lock = threading.Lock()
        self._queue: deque[_Waiter] = deque()
        self.baseline = baseline() or 0
        self.active = self.peak = self.in_use = self.peak_in_use = 0
        self.admitted = 0
        self.seconds = 0.0  # running mean of the time a decode holds its admission (for Retry-After)

    @property
    def waiting(self) -> int:
        """Decodes waiting for admission."""
        return len(self._queue)

    @property
    def available(self) -> int | None:
        """Bytes the budget leaves for decodes after the baseline (None without a memory budget)."""
        return None if self.memory is None else max(0, self.memory - self.baseline)

    def _fits(self, cost: int) -> bool:
        if self.active == 0:
            return True
        return self.active < self.limit and (self.memory is None or self.in_use + cost <= self.available)

    def _grant(self) -> None:
        """Admit waiters from the head of the queue while they fit (lock held)."""
        while self._queue and self._fits(self._queue[0].cost):
            waiter = self._queue.popleft()
            waiter.granted = True
            self._take(waiter.cost)
            waiter.wake()

    def _take(self, cost: int) -> None:
        self.active += 1
        self.in_use += cost
        self.admitted += 1
        self.peak, self.peak_in_use = max(self.peak, self.active), max(self.peak_in_use, self.in_use)

    def _enqueue(self, cost: int, wake: Callable[[], None], max_waiting: int | None = None) -> _Waiter | None:
        """Take the admission at once (None) or queue a waiter woken when it is granted; raise
        :class:`DecodeQueueFull` instead of queueing when ``max_waiting`` already wait."""
        with self._lock:
            if not self._queue and self._fits(cost):
                self._take(cost)
                return None
            if max_waiting is not None and len(self._queue) >= max_waiting:
                raise DecodeQueueFull(len(self._queue), self._expected_wait())
            waiter = _Waiter(int(cost), wake)
            self._queue.append(waiter)
            return waiter

    def _withdraw(self, waiter: _Waiter) -> bool:
        """Take a waiter out of the queue; False when it was granted meanwhile (then it must be released)."""
        with self._lock:
            if waiter.granted:
                return False
            self._queue.remove(waiter)
            self._grant()  # the head may have changed
            return True

    def release(self, cost: int, seconds: float = 0.0) -> None:
        """End one admitted decode of ``cost`` bytes that held its admission ``seconds``; admits who now fits."""
        with self._lock:
            self.active -= 1
            self.in_use -= int(cost)
            self.seconds += (seconds - self.seconds) * (0.3 if self.seconds else 1.0)
            if self.active == 0:
                self.in_use = 0
                measured = self._measure()
                self.baseline = self.baseline if measured is None else measured
            self._grant()

    @contextlib.contextmanager
    def hold(self, cost: int = 0, max_waiting: int | None = None) -> Iterator[None]:
        """Admission for ``cost`` bytes for the duration of the block (this thread waits its turn, or raises
        :class:`DecodeQueueFull` when ``max_waiting`` already wait)."""
        event = threading.Event()
        waiter = self._enqueue(cost, event.set, max_waiting)
        if waiter is not None:
            event.wait()
        started = time.monotonic()
        try:
            yield
        finally:
            self.release(cost, time.monotonic() - started)

    @contextlib.asynccontextmanager
    async def admit(self, cost: int = 0, max_waiting: int | None = None) -> AsyncIterator[None]:
        """Admission for ``cost`` bytes for the duration of the ``async with`` block, awaited without a thread (or
        :class:`DecodeQueueFull` when ``max_waiting`` already wait); a request cancelled while it waits leaves the
        queue."""
        loop = asyncio.get_running_loop()
        granted = loop.create_future()

        def wake() -> None:
            loop.call_soon_threadsafe(lambda: granted.done() or granted.set_result(None))

        waiter = self._enqueue(cost, wake, max_waiting)
        if waiter is not None:
            try:
                await granted
            except BaseException:
                if not self._withdraw(waiter):
                    self.release(cost)
                raise
        started = time.monotonic()
        try:
            yield
        finally:
            self.release(cost, time.monotonic() - started)

    def _expected_wait(self) -> float:
        """Seconds until a decode queued now would be admitted (lock held): the queue and the running decodes, in
        rounds of the decodes running at once, times the mean time a decode holds its admission; at least 1."""
        rounds = (len(self._queue) + self.active) / max(1, self.active)
        return max(1.0, rounds * (self.seconds or 1.0))

    def status(self) -> dict[str, Any]:
        """The budget's state for ``/health`` (MiB, counts)."""
        with self._lock:
            return {"max_memory_mib": None if self.memory is None else round(self.memory / MIB, 1),
                    "baseline_mib": round(self.baseline / MIB, 1),
                    "for_decodes_mib": None if self.available is None else round(self.available / MIB, 1),
                    "in_use_mib": round(self.in_use / MIB, 1), "active": self.active, "waiting": self.waiting,
                    "peak_active": self.peak, "admitted": self.admitted}


__all__ = ["ImageTooLargeError", "DecodeBudget", "DecodeQueueFull", "Upload", "inspect_upload", "upload_cost",
           "decode_rgb", "release_memory", "rss_bytes", "default_max_decodes", "TRIM_PIXELS", "FIXED_COST", "MIB",
           "BYTES_PER_PIXEL"]
