"""Face quality per face: how big the face is, how sharp, how lit and how turned, with the thresholds under which a
face is flagged (the ``issues`` of :func:`face_quality`; docs/faces.md lists them and where they come from).

* ``size_px`` – the shorter side of the detected box in input pixels;
* ``sharpness`` – the variance of the Laplacian of the aligned grey face resampled to 48×48 (the model's view),
  on 0–255 grey levels: low for blurred faces;
* ``brightness`` – the mean grey level of the aligned face (0–1) and ``clipped`` the share of its pixels at
  ≤ 5 or ≥ 250 (under- or over-exposed);
* ``yaw`` and ``pitch`` – head turn in degrees estimated from the five landmarks (dlib: eye corners and nose base;
  YuNet: eye centres and nose tip): the nose point's offset from the eyes' midpoint relative to the distance
  between the eyes, against the detector's frontal template (:data:`pcnn_fer.faces.align.TEMPLATE_5PT`,
  :data:`~pcnn_fer.faces.align.TEMPLATE_YUNET`); rough (about ±10°), None without landmarks. Positive yaw:
  the nose is to the image right of the eyes' midpoint; positive pitch: the nose is lower than on a frontal face
  (head down).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .align import LANDMARK_TEMPLATES, TEMPLATE_5PT

__all__ = ["QUALITY_THRESHOLDS", "face_quality", "faces_quality", "head_pose", "sharpness"]

#: Flag a face when: its box is smaller than ``min_size_px``; its sharpness is below ``min_sharpness``; its
#: brightness is outside [``min_brightness``, ``max_brightness``] or more than ``max_clipped`` of it is clipped; its
#: |yaw| or |pitch| exceeds ``max_yaw`` / ``max_pitch`` degrees.
QUALITY_THRESHOLDS: dict[str, float] = {"min_size_px": 32.0, "min_sharpness": 200.0, "min_brightness": 0.15,
                                        "max_brightness": 0.85, "max_clipped": 0.25, "max_yaw": 35.0,
                                        "max_pitch": 30.0}



def _eyes_and_nose(points: np.ndarray, detector: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image-right eye, image-left eye, nose point) of five landmarks in the order of ``detector``'s points."""
    if detector == "yunet":  # left_eye, right_eye, nose_tip, left_mouth, right_mouth (image sides)
        return points[1], points[0], points[2]
    return (points[0] + points[1]) / 2, (points[2] + points[3]) / 2, points[4]  # dlib: corners, nose base


def _nose_drop(detector: str) -> float:
    """The frontal nose point's drop below the eyes' midpoint, in inter-ocular distances, on the detector's
    template."""
    right_eye, left_eye, nose = _eyes_and_nose(LANDMARK_TEMPLATES.get(detector, TEMPLATE_5PT), detector)
    return float((nose[1] - (right_eye[1] + left_eye[1]) / 2) / np.linalg.norm(right_eye - left_eye))


#: The frontal nose base below the eyes' midpoint, in inter-ocular distances.
_NOSE_DROP = _nose_drop("dlib-hog")
#: How far the nose base sits in front of the eyes, in inter-ocular distances (its offset at 90° of turn).
_NOSE_DEPTH = 0.6


def _grey48(crops: Sequence[np.ndarray]) -> np.ndarray:
    """Aligned crops as float grey levels 0–255 at 48×48, (N, 48, 48): one colour conversion for crops of one
    shape (OpenCV's conversion is per pixel, so stacking them changes no value)."""
    import cv2

    rgbs = [np.asarray(c, dtype=np.uint8) for c in crops]
    if rgbs and all(c.ndim == 3 and c.shape == rgbs[0].shape for c in rgbs):
        h, w = rgbs[0].shape[:2]
        stacked = np.ascontiguousarray(np.stack(rgbs)).reshape(len(rgbs) * h, w, 3)
        greys = list(cv2.cvtColor(stacked, cv2.COLOR_RGB2GRAY).reshape(len(rgbs), h, w))
    else:
        greys = [cv2.cvtColor(c, cv2.COLOR_RGB2GRAY) if c.ndim == 3 else c for c in rgbs]
    greys = [g if g.shape == (48, 48) else cv2.resize(g, (48, 48), interpolation=cv2.INTER_AREA) for g in greys]
    return np.stack(greys).astype(np.float64) if greys else np.zeros((0, 48, 48))


def _laplacian_variance(grey: np.ndarray) -> np.ndarray:
    """Variance of the Laplacian of (N, H, W) grey images, each on its own: OpenCV's 3×3 aperture
    (``cv2.Laplacian``, ksize 1) with its border rule (reflect-101); integer grey levels give the same values."""
    p = np.pad(grey, ((0, 0), (1, 1), (1, 1)), mode="reflect")
    lap = p[:, :-2, 1:-1] + p[:, 2:, 1:-1] + p[:, 1:-1, :-2] + p[:, 1:-1, 2:] - 4 * p[:, 1:-1, 1:-1]
    return lap.var(axis=(1, 2))


def sharpness(crop: np.ndarray) -> float:
    """Variance of the Laplacian of the aligned face at 48×48 (grey levels 0–255)."""
    return float(_laplacian_variance(_grey48([crop]))[0])


def head_pose(landmarks: np.ndarray | None, detector: str = "") -> tuple[float | None, float | None]:
    """(yaw, pitch) in degrees from five landmarks in the order of ``detector``'s points
    (:func:`~pcnn_fer.faces.detection.landmark_names`), or (None, None) without them."""
    if landmarks is None:
        return None, None
    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    right_eye, left_eye, nose = _eyes_and_nose(points, detector)
    across = right_eye - left_eye
    iod = float(np.linalg.norm(across))
    if iod < 1e-6:
        return None, None
    ex = across / iod
    ey = np.array([-ex[1], ex[0]])  # the face's down direction in the image
    offset = nose - (right_eye + left_eye) / 2
    dx, dy = float(offset @ ex) / iod, float(offset @ ey) / iod
    drop = _NOSE_DROP if detector != "yunet" else _nose_drop("yunet")
    yaw = math.degrees(math.asin(float(np.clip(dx / _NOSE_DEPTH, -1.0, 1.0))))
    pitch = math.degrees(math.asin(float(np.clip((dy - drop) / _NOSE_DEPTH, -1.0, 1.0))))
    return yaw, pitch


def face_quality(crop: np.ndarray, box: np.ndarray, landmarks: np.ndarray | None, detector: str = "",
                 thresholds: dict[str, float] = QUALITY_THRESHOLDS) -> dict[str, Any]:
    """Quality fields of one face (see the module docstring) and ``issues``: the names of the thresholds it fails
    (``small``, ``blurred``, ``dark``, ``bright``, ``clipped``, ``turned``, ``tilted``)."""
    return faces_quality([crop], [box], [landmarks], [detector], thresholds)[0]


def faces_quality(crops: Sequence[np.ndarray], boxes: Sequence[np.ndarray],
                  landmarks: Sequence[np.ndarray | None], detectors: Sequence[str],
                  thresholds: dict[str, float] = QUALITY_THRESHOLDS) -> list[dict[str, Any]]:
    """:func:`face_quality` of many faces at once (the image measures computed over the stacked crops)."""
    grey = _grey48(crops)
    brightness = grey.mean(axis=(1, 2)) / 255
    clipped = ((grey <= 5) | (grey >= 250)).mean(axis=(1, 2))
    sharp = _laplacian_variance(grey)
    t = thresholds
    out = []
    for j, (box, marks, detector) in enumerate(zip(boxes, landmarks, detectors, strict=True)):
        x1, y1, x2, y2 = (float(v) for v in np.asarray(box).reshape(4))
        size = max(0.0, min(x2 - x1, y2 - y1))
        bright, clip, blur = float(brightness[j]), float(clipped[j]), float(sharp[j])
        yaw, pitch = head_pose(marks, detector)
        issues = [name for name, failed in (
            ("small", size < t["min_size_px"]), ("blurred", blur < t["min_sharpness"]),
            ("dark", bright < t["min_brightness"]), ("bright", bright > t["max_brightness"]),
            ("clipped", clip > t["max_clipped"]), ("turned", yaw is not None and abs(yaw) > t["max_yaw"]),
            ("tilted", pitch is not None and abs(pitch) > t["max_pitch"])) if failed]
        out.append({"size_px": round(size, 1), "sharpness": round(blur, 1), "brightness": round(bright, 3),
                    "clipped": round(clip, 3), "yaw": None if yaw is None else round(yaw, 1),
                    "pitch": None if pitch is None else round(pitch, 1), "issues": issues})
    return out
