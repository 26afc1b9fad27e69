"""Face detection across video frames that reuses the previous frame's faces.

Detection dominates the cost of a video frame (docs/faces.md), and between two analysed frames faces move little.
:class:`FrameTracker` therefore runs the full detector only on the first frame of a video, every ``refresh``-th
analysed frame after it, and whenever the search below finds fewer faces than the previous frame had; in between it
searches only windows around the previous frame's faces (each face's box grown by ``margin`` face sides on every
side, overlapping windows merged; a window whose faces are larger than HOG needs is scaled down first) and maps what it
finds back to frame pixels. After each window search, ``flow_frames`` frames follow the faces by optical flow instead
(:mod:`pcnn_fer.faces.flow`; they fall back to the search whenever a face cannot be followed or two faces overlap).
A face that enters the picture away from the known ones is found at the next full detection, at most
``refresh - 1`` analysed frames late.
"""

from __future__ import annotations

import numpy as np

from ..errors import UsageError
from .detect import Detection, FaceDetector, detect_traced
from .flow import follow_faces

__all__ = ["FrameTracker", "DEFAULT_REFRESH", "DEFAULT_MARGIN", "DEFAULT_FLOW_FRAMES", "search_windows"]

#: Full detection every this many analysed frames (``pcnn predict --detect-every``).
DEFAULT_REFRESH = 10
#: A window reaches this many face sides beyond the previous frame's face on every side.
DEFAULT_MARGIN = 0.3
#: Windows are scaled down so that the smallest face inside is about this many pixels (None: never scaled).
WINDOW_FACE_SIDE = 100
#: Frames followed by optical flow (:mod:`pcnn_fer.faces.flow`) after each window search (0: search every frame).
DEFAULT_FLOW_FRAMES = 1
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


def _scaled(d: Detection, factor: float) -> Detection:
    if factor == 1:
        return d
    marks = None if d.landmarks is None else d.landmarks * factor
    return Detection(d.box * factor, marks, d.score, d.detector)


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

    def __init__(self, detector: FaceDetector, refresh: int = DEFAULT_REFRESH, margin: float = DEFAULT_MARGIN,
                 face_side: float | None = WINDOW_FACE_SIDE, flow_frames: int = DEFAULT_FLOW_FRAMES) -> None:
        if not isinstance(refresh, int) or refresh < 1:
            raise UsageError(f"refresh must be a frame count >= 1, got {refresh!r}")
        if margin <= 0:
            raise UsageError(f"margin must be positive, got {margin!r}")
        if not isinstance(flow_frames, int) or flow_frames < 0:
            raise UsageError(f"flow_frames must be a frame count >= 0, got {flow_frames!r}")
        if face_side == WINDOW_FACE_SIDE:  # a detector may find faces in windows at a smaller size (YuNet: 48 px)
            face_side = getattr(detector, "window_face_side", None) or face_side
        self.detector, self.refresh, self.margin, self.face_side = detector, refresh, float(margin), face_side
        self.flow_frames = flow_frames
        self._video: object = None
        self._faces: list[Detection] = []
        self._since_full = self._since_search = 0
        self._gray: np.ndarray | None = None

    def _window(self, rgb: np.ndarray, window: tuple[int, int, int, int]) -> tuple[np.ndarray, float]:
        """The window's pixels and the factor they were scaled by: down so that the smallest previous face inside
        is about :attr:`face_side` pixels (HOG's cost grows with the area it scans and it finds faces down to
        about 80 px), never up."""
        x1, y1, x2, y2 = window
        crop = np.ascontiguousarray(rgb[y1:y2, x1:x2])
        inside = [min(f.width, f.height) for f in self._faces
                  if x1 <= (f.box[0] + f.box[2]) / 2 <= x2 and y1 <= (f.box[1] + f.box[3]) / 2 <= y2]
        if not self.face_side or not inside or min(inside) <= 1.25 * self.face_side:
            return crop, 1.0
        import cv2

        scale = self.face_side / min(inside)
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        return cv2.resize(crop, size, interpolation=cv2.INTER_AREA), size[0] / crop.shape[1]

    def reset(self) -> None:
        """Forget the current video (the next frame gets a full detection)."""
        self._video, self._faces, self._since_full, self._since_search, self._gray = None, [], 0, 0, None

    def detect_traced(self, video: object, rgb: np.ndarray) -> tuple[list[Detection], list[str]]:
        """Faces in frame ``rgb`` of ``video`` and what was run to find them (the slow fallbacks of still images are
        never run on video frames)."""
        h, w = rgb.shape[:2]
        gray = None
        same = video == self._video and self._faces and self._since_full + 1 < self.refresh
        if self.flow_frames:
            import cv2

            gray = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
            if same and self._since_search < self.flow_frames and self._gray is not None \
                    and self._gray.shape == gray.shape:
                followed = follow_faces(self._gray, gray, self._faces)
                if followed is not None:
                    self._since_full += 1
                    self._since_search += 1
                    self._faces, self._gray = followed, gray
                    return sorted(followed, key=lambda d: d.box[0]), ["optical flow"]
        self._since_search, self._gray = 0, gray
        windows: list[tuple[int, int, int, int]] = []
        if same:
            windows = search_windows(self._faces, h, w, self.margin)
            if sum((x2 - x1) * (y2 - y1) for x1, y1, x2, y2 in windows) > MAX_WINDOW_SHARE * h * w:
                windows = []
        tried: list[str] = []
        found: list[Detection] = []
        for x1, y1, x2, y2 in windows:
            crop, scale = self._window(rgb, (x1, y1, x2, y2))
            search = getattr(self.detector, "detect_window", None)  # a window holds faces of a known size:
            more, more_tried = search(crop) if search else detect_traced(self.detector, crop, thorough=False)
            found += [_shifted(_scaled(d, 1 / scale), x1, y1) for d in more]
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
