"""What every face detector returns and how it is called: the :class:`Detection` record, the :class:`FaceDetector`
protocol, :func:`detect_traced`, and the image helpers the detectors share (checked RGB input, downscaling).

The detectors themselves live in :mod:`.detect` (dlib HOG / CNN, Haar, the ``auto`` choice and the factory) and
:mod:`.yunet` (the YuNet CNN); alignment (:mod:`.align`) needs only this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import PCNNError

#: Landmark order of the dlib 5-point model, named by the side of the *image* they are on (like PCNN's regions).
LANDMARK_NAMES: tuple[str, ...] = ("right_eye_outer", "right_eye_inner", "left_eye_outer", "left_eye_inner", "nose")
#: Landmark order of YuNet (``detector == "yunet"``), named by the side of the image like :data:`LANDMARK_NAMES`:
#: the eye centres, the tip of the nose and the mouth corners.
YUNET_LANDMARK_NAMES: tuple[str, ...] = ("left_eye", "right_eye", "nose_tip", "left_mouth", "right_mouth")


def landmark_names(detector: str) -> tuple[str, ...]:
    """The names of a detection's five landmarks, in order, from the name of the detector that found it."""
    return YUNET_LANDMARK_NAMES if detector == "yunet" else LANDMARK_NAMES


@dataclass
class Detection:
    """One face: ``box`` [x1, y1, x2, y2] in input pixels, ``landmarks`` (5, 2) in :func:`landmark_names` order
    (which depends on ``detector``) or None, a detector ``score`` (higher is surer; scales differ between
    detectors) and the ``detector`` name."""

    box: np.ndarray
    landmarks: np.ndarray | None = None
    score: float = 1.0
    detector: str = ""

    def __post_init__(self) -> None:
        self.box = np.asarray(self.box, dtype=np.float64).reshape(4)
        if self.landmarks is not None:
            self.landmarks = np.asarray(self.landmarks, dtype=np.float64).reshape(-1, 2)
        self.score = float(self.score)

    @property
    def width(self) -> float:
        """Box width in pixels."""
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        """Box height in pixels."""
        return float(self.box[3] - self.box[1])


def box_iou(a: np.ndarray | list[float], b: np.ndarray | list[float]) -> float:
    """Intersection over union of two [x1, y1, x2, y2] boxes (0 when they do not overlap)."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@runtime_checkable
class FaceDetector(Protocol):
    """Anything with ``detect(rgb) -> list[Detection]`` (rgb: HxWx3 uint8) can be plugged into the recognizer."""

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces found in an RGB uint8 image."""
        ...


class DetectorUnavailable(PCNNError, RuntimeError):
    """The requested detector's package or model file is not installed."""


def detect_traced(detector: FaceDetector, rgb: np.ndarray,
                  thorough: bool = True) -> tuple[list[Detection], list[str]]:
    """``detector.detect_traced(rgb, thorough)`` when it has one, else its detections and its name."""
    traced = getattr(detector, "detect_traced", None)
    if traced is not None:
        return traced(rgb, thorough)
    return list(detector.detect(rgb)), [getattr(detector, "name", type(detector).__name__)]


def as_rgb_uint8(rgb: np.ndarray) -> np.ndarray:
    """The contiguous HxWx3 uint8 array detectors take; ValueError for anything else."""
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"detectors take HxWx3 uint8 RGB arrays, got {rgb.dtype} {rgb.shape}")
    return np.ascontiguousarray(rgb)


def downscale(rgb: np.ndarray, max_pixels: int) -> tuple[np.ndarray, float]:
    """The image scaled to at most ``max_pixels`` (INTER_AREA) and the scale factor applied (≤ 1)."""
    h, w = rgb.shape[:2]
    if h * w <= max_pixels:
        return rgb, 1.0
    import cv2

    scale = (max_pixels / (h * w)) ** 0.5
    small = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return small, small.shape[1] / w


__all__ = ["Detection", "FaceDetector", "DetectorUnavailable", "LANDMARK_NAMES", "YUNET_LANDMARK_NAMES",
           "landmark_names", "box_iou", "detect_traced", "as_rgb_uint8", "downscale"]
