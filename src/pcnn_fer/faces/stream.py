"""Frames for the recognizer, decoded ahead and grouped into chunks.

:func:`prefetch` runs a frame iterator (decoding images, reading video frames) in a background thread, a bounded
number of frames ahead of the consumer. :func:`chunks` groups consecutive frames so that faces of several inputs are
classified in one batch. The grouping depends only on the input list (never on timing), so a job resumed at a chunk
boundary (:func:`chunk_starts`) classifies exactly the same batches as an uninterrupted one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from .sources import Frame, Source

T = TypeVar("T")

#: Source kinds that give one frame each (a still image, or a skipped record for an unusable input).
STILL_KINDS = frozenset({"image", "missing"})
#: Source kinds whose frames are followed over time (face ids, summary.json, a timeline, an annotated video).
MOVING_KINDS = frozenset({"video", "webcam", "sequence"})

_DONE = object()


def prefetch(items: Iterable[T], depth: int) -> Iterator[T]:
    """The items of ``items``, produced by a background thread at most ``depth`` items ahead. An exception raised
    by the producer is raised here; closing this generator early stops the producer."""
    if depth < 1:
        raise ValueError(f"depth must be at least 1, got {depth}")
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            put(e)

    worker = threading.Thread(target=produce, name="pcnn-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=5)


def frames_per_chunk(detects: bool, batch_size: int) -> int:
    """Frames classified together: ``batch_size`` already-cropped faces, or one image at a time when faces are
    detected (detection dominates there, and big photos stay one at a time in memory)."""
    return batch_size if not detects else 1


def chunks(frames: Iterable[Frame], size: int) -> Iterator[list[Frame]]:
    """Consecutive frames in groups of at most ``size``: still inputs together, the frames of one video together;
    a group never mixes a video's frames with another source's, and webcam frames come one at a time."""
    group: list[Frame] = []
    for frame in frames:
        if group and (len(group) >= size or _breaks(group[-1].source, frame.source)):
            yield group
            group = []
        group.append(frame)
        if frame.source.kind == "webcam":
            yield group
            group = []
    if group:
        yield group


def _breaks(previous: Source, current: Source) -> bool:
    """True when ``current``'s frames may not join a group holding ``previous``'s."""
    if previous is current:
        return False
    return previous.kind not in STILL_KINDS or current.kind not in STILL_KINDS


def chunk_starts(sources: Sequence[Source], size: int) -> list[int]:
    """Indices into ``sources`` where :func:`chunks` starts a group of still inputs or a new video (a job may be
    resumed at any of them and form the same groups afterwards), plus ``len(sources)``."""
    starts, run = [], 0
    for i, source in enumerate(sources):
        still = source.kind in STILL_KINDS
        if not still or i == 0 or sources[i - 1].kind not in STILL_KINDS or run >= size:
            run = 0
        if run == 0:
            starts.append(i)
        run = run + 1 if still else size  # a video always ends its group
    starts.append(len(sources))
    return starts


__all__ = ["prefetch", "chunks", "frames_per_chunk", "chunk_starts", "STILL_KINDS", "MOVING_KINDS"]
