"""Face detection across video frames that reuses the previous frame's faces.

Detection dominates the cost of a video frame (docs/faces.md), and between two analysed frames faces move little.
:class:`FrameTracker` therefore runs the full detector only on the first frame of a video, every ``refresh``-th
analysed frame after it, and whenever the search below finds fewer faces than the previous frame had; in between it
searches only windows around the previous frame's faces (each face's box grown by ``margin`` face sides on every
side, overlapping windows merged) and maps what it finds back to frame pixels. A face that enters the picture away
from the known ones is found at the next full detection, at most ``refresh - 1`` analysed frames late.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .detect import Detection, FaceDetector, detect_traced

__all__ = ["FrameTracker", "DEFAULT_REFRESH", "search_windows"]

#: Full detection every this many analysed frames (``pcnn predict --detect-every``).
DEFAULT_REFRESH = 10
#: A window covering more than this share of the frame is not worth it: the full detector runs instead.
MAX_WINDOW_SHARE = 0.5
#: Side of dlib's HOG cells in pixels.
HOG_CELL = 8


def search_windows(faces: list[Detection], height: int, width: int,
                   margin: float) -> list[tuple[int, int, int, int]]:
    """``(x1, y1, x2, y2)`` windows to search a frame in: each face's box grown by ``margin`` times its larger side,
    overlapping windows merged into their bounding box, clipped to the ``height``×``width`` frame, and each corner
    put on the 8-pixel grid of HOG cells so that a window sees the cells the whole frame does."""
    windows: list[list[float]] = []
    for f in faces:
        grow = margin * max(f.width, f.height)
        window = [f.box[0] - grow, f.box[1] - grow, f.box[2] + grow, f.box[3] + grow]
        i = 0
        while i < len(windows):  # ``windows`` stay pairwise disjoint: absorb every one the new window overlaps
            a = windows[i]
            if a[0] < window[2] and window[0] < a[2] and a[1] < window[3] and window[1] < a[3]:
                del windows[i]
                window = [min(a[0], window[0]), min(a[1], window[1]), max(a[2], window[2]), max(a[3], window[3])]
                i = 0  # the grown window may now overlap one already passed
            else:
                i += 1
        windows.append(window)
    return sorted((max(0, int(x1) // HOG_CELL * HOG_CELL), max(0, int(y1) // HOG_CELL * HOG_CELL),
                   min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))) for x1, y1, x2, y2 in windows)


def _shifted(d: Detection, dx: int, dy: int) -> Detection:
    offset = np.array([dx, dy], dtype=np.float64)
    marks = None if d.landmarks is None else d.landmarks + offset
    return Detection(d.box + np.tile(offset, 2), marks, d.score, d.detector)


class FrameTracker:
    """Detection for the consecutive analysed frames of one video at a time (see the module docstring).

    ``detect_traced(video, rgb)`` takes any hashable ``video`` key: a new key starts a new video with a full
    detection. ``refresh=1`` runs the full detector on every frame. What was run is reported like
    :func:`~pcnn_fer.faces.detect.detect_traced` does, window searches as ``"dlib-hog 1x window"``.
    """

    def __init__(self, detector: FaceDetector, refresh: int = DEFAULT_REFRESH, margin: float = 0.5) -> None:
        if not isinstance(refresh, int) or refresh < 1:
            raise UsageError(f"refresh must be a frame count >= 1, got {refresh!r}")
        if margin <= 0:
            raise UsageError(f"margin must be positive, got {margin!r}")
        self.detector, self.refresh, self.margin = detector, refresh, float(margin)
        self._video: object = None
        self._faces: list[Detection] = []
        self._since_full = 0

    def reset(self) -> None:
        """Forget the current video (the next frame gets a full detection)."""
        self._video, self._faces, self._since_full = None, [], 0

    def detect_traced(self, video: object, rgb: np.ndarray) -> tuple[list[Detection], list[str]]:
        """Faces in frame ``rgb`` of ``video`` and what was run to find them (the slow fallbacks of still images are
        never run on video frames)."""
        h, w = rgb.shape[:2]
        windows: list[tuple[int, int, int, int]] = []
        if video == self._video and self._faces and self._since_full + 1 < self.refresh:
            windows = search_windows(self._faces, h, w, self.margin)
            if sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in windows) > MAX_WINDOW_SHARE * h * w:
                windows = []
        tried: list[str] = []
        found: list[Detection] = []
        for x1, y1, x2, y2 in windows:
            more, more_tried = detect_traced(self.detector, np.ascontiguousarray(rgb[y1:y2, x1:x2]), thorough=False)
            found += [_shifted(d, x1, y1) for d in more]
            tried += [f"{t} window" for t in more_tried if f"{t} window" not in tried]
        if windows and len(found) < len(self._faces):
            windows = []  # a face was lost (or left its window): look at the whole frame
        if not windows:
            full, full_tried = detect_traced(self.detector, rgb, thorough=False)
            found, tried = full, tried + full_tried
            self._since_full = 0
        else:
            self._since_full += 1
        self._video, self._faces = video, found
        return sorted(found, key=lambda d: d.box[0]), tried
