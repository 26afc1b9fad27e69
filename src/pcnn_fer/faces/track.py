"""Face detection across video frames that reuses the previous frame's faces.

Detection dominates the cost of a video frame (docs/faces.md), and between two analysed frames faces move little.
:class:`FrameTracker` therefore runs the full detector only on the first frame of a video, every ``refresh``-th
analysed frame after it, and whenever the search below finds fewer faces than the previous frame had; in between it
searches only a window around the previous frame's faces (the box around all of them, grown by ``margin`` face
sides on every side) and maps what it finds back to frame pixels. A face that enters the picture away from the
known ones is found at the next full detection, at most ``refresh - 1`` analysed frames late.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .detect import Detection, FaceDetector, detect_traced

__all__ = ["FrameTracker", "DEFAULT_REFRESH", "search_window"]

#: Full detection every this many analysed frames (``pcnn predict --detect-every``).
DEFAULT_REFRESH = 10
#: A window covering more than this share of the frame is not worth it: the full detector runs instead.
MAX_WINDOW_SHARE = 0.5
#: Side of dlib's HOG cells in pixels.
HOG_CELL = 8


def search_window(faces: list[Detection], height: int, width: int, margin: float) -> tuple[int, int, int, int]:
    """``(x1, y1, x2, y2)``: the box around all ``faces`` grown by ``margin`` times each face's larger side,
    clipped to a ``height``×``width`` frame, its corner on the 8-pixel grid of HOG cells so that the window sees
    the cells the whole frame does."""
    x1 = min(f.box[0] - margin * max(f.width, f.height) for f in faces)
    y1 = min(f.box[1] - margin * max(f.width, f.height) for f in faces)
    x2 = max(f.box[2] + margin * max(f.width, f.height) for f in faces)
    y2 = max(f.box[3] + margin * max(f.width, f.height) for f in faces)
    x1, y1 = (max(0, int(v) // HOG_CELL * HOG_CELL) for v in (x1, y1))
    return (x1, y1, min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2))))


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

    def __init__(self, detector: FaceDetector, refresh: int = DEFAULT_REFRESH, margin: float = 1.0) -> None:
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
        window = None
        if video == self._video and self._faces and self._since_full + 1 < self.refresh:
            window = search_window(self._faces, h, w, self.margin)
            x1, y1, x2, y2 = window
            if (x2 - x1) * (y2 - y1) > MAX_WINDOW_SHARE * h * w:
                window = None
        tried: list[str] = []
        found: list[Detection] = []
        if window is not None:
            x1, y1, x2, y2 = window
            found, tried = detect_traced(self.detector, np.ascontiguousarray(rgb[y1:y2, x1:x2]), thorough=False)
            found, tried = [_shifted(d, x1, y1) for d in found], [f"{t} window" for t in tried]
            if len(found) < len(self._faces):
                window = None  # a face was lost (or left the window): look at the whole frame
        if window is None:
            full, full_tried = detect_traced(self.detector, rgb, thorough=False)
            found, tried = full, tried + full_tried
            self._since_full = 0
        else:
            self._since_full += 1
        self._video, self._faces = video, found
        return sorted(found, key=lambda d: d.box[0]), tried
