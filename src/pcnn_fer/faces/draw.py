"""Annotated images: a box per face in the colour of its expression, the label and score above it (in videos the
person's ``#face_id`` and smoothed label), the five
landmarks, and five small per-region bars under it – one per PCNN region (LE, RE, LC, RC, M = left eye, right eye,
left cheek, right cheek, mouth), each as long as that region's probability for the face's label and coloured by the
region's own top class; a region the model's occlusion heads find covered has a red abbreviation and its bar
crossed out. A face answered ``uncertain`` (``--min-confidence``) is boxed in grey."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..models.pcnn import REGIONS

if TYPE_CHECKING:
    from .recognizer import Face

#: RGB colour per canonical class (unknown classes get a grey).
CLASS_COLORS: dict[str, tuple[int, int, int]] = {
    "neutral": (200, 200, 200),
    "happiness": (255, 200, 0),
    "surprise": (0, 200, 255),
    "sadness": (60, 110, 255),
    "anger": (255, 40, 40),
    "disgust": (40, 190, 60),
    "fear": (180, 80, 255),
    "contempt": (255, 120, 200),
}
REGION_ABBREVIATIONS = {"left_eye": "LE", "right_eye": "RE", "left_cheek": "LC", "right_cheek": "RC", "mouth": "M"}
#: A region whose occlusion score reaches this is drawn as covered (its abbreviation red, its bar crossed out).
COVERED_SCORE = 0.5
COVERED_COLOR = (255, 60, 60)
#: Images smaller than this (shorter side) are upscaled by an integer factor before drawing, so text stays legible.
MIN_CANVAS = 240
#: ... but never beyond this many pixels (a 16×100000 strip would otherwise become 240×1500000).
MAX_UPSCALED_PIXELS = 4_000_000


def class_color(name: str) -> tuple[int, int, int]:
    """The drawing colour of a class."""
    return CLASS_COLORS.get(name, (160, 160, 160))


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color, thickness: int) -> None:
    import cv2

    cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thickness, cv2.LINE_AA)


def draw_faces(rgb: np.ndarray, faces: Sequence[Face], regions: bool = True, landmarks: bool = True) -> np.ndarray:
    """A copy of ``rgb`` with every face annotated (box, label + score, landmarks, per-region bars). Small images
    are upscaled by an integer factor first (see :data:`MIN_CANVAS`)."""
    import cv2

    factor = int(np.ceil(MIN_CANVAS / max(1, min(rgb.shape[:2]))))
    factor = max(1, min(factor, int((MAX_UPSCALED_PIXELS / max(1, rgb.shape[0] * rgb.shape[1])) ** 0.5)))
    canvas = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    if factor > 1:
        canvas = cv2.resize(canvas, (rgb.shape[1] * factor, rgb.shape[0] * factor), interpolation=cv2.INTER_NEAREST)
    height, width = canvas.shape[:2]
    for face in faces:
        x1, y1, x2, y2 = (int(round(v * factor)) for v in face.box)
        side = max(1, min(x2 - x1, y2 - y1))
        shown = face.smooth_label or face.label  # tracked video faces: the person's id and smoothed label
        shown_score = face.smooth_probabilities[shown] if face.smooth_probabilities else face.score
        color = class_color(shown)
        thick = max(1, round(side / 60))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if landmarks and face.landmarks is not None:
            for x, y in np.asarray(face.landmarks) * factor:
                cv2.circle(canvas, (int(round(x)), int(round(y))), max(1, thick), (0, 255, 0), -1, cv2.LINE_AA)
        scale = float(np.clip(side / 160, 0.35, 1.2))
        label = ("" if face.face_id is None else f"#{face.face_id} ") + f"{shown} {shown_score:.0%}"
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thick))
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else max(0, y1) + th + 6  # above the box, else inside its top
        cv2.rectangle(canvas, (x1, ty - th - 4), (min(width - 1, x1 + tw + 4), ty + base), color, -1)
        _text(canvas, label, (x1 + 2, ty - 2), scale, (0, 0, 0), max(1, thick))
        if regions and face.regions:
            _region_bars(canvas, face, (x1, y1, x2, y2))
    return canvas


def _region_bars(canvas: np.ndarray, face: Face, box: tuple[int, int, int, int]) -> None:
    """Five bars under the box (inside its bottom when there is no room): each region's probability of the label."""
    import cv2

    x1, y1, x2, y2 = box
    height, width = canvas.shape[:2]
    row = int(np.clip((x2 - x1) / 10, 8, 22))
    panel_h = row * len(REGIONS) + 4
    top = y2 + 3 if y2 + 3 + panel_h <= height else max(0, y2 - panel_h)
    left, right = max(0, x1), min(width - 1, x2)
    font = row / 28
    (text_w, _), _ = cv2.getTextSize("RC", cv2.FONT_HERSHEY_SIMPLEX, font, 1)
    label_w = text_w + 6
    bar_w = max(4, right - left - label_w - 4)
    overlay = canvas.copy()
    cv2.rectangle(overlay, (left, top), (right, top + panel_h), (0, 0, 0), -1)
    canvas[:] = cv2.addWeighted(overlay, 0.55, canvas, 0.45, 0)
    label = face.top_label  # the best class, also for a face answered "uncertain"
    for i, name in enumerate(REGIONS):
        probs = face.regions.get(name, {})
        p = float(probs.get(label, 0.0))
        own = max(probs, key=probs.get) if probs else label
        y = top + 2 + i * row
        covered = face.occlusion is not None and face.occlusion.get(name, 0.0) >= COVERED_SCORE
        _text(canvas, REGION_ABBREVIATIONS[name], (left + 2, y + row - 2), font,
              COVERED_COLOR if covered else (255, 255, 255), 1)
        bx = left + label_w
        cv2.rectangle(canvas, (bx, y + 1), (bx + bar_w, y + row - 2), COVERED_COLOR if covered else (90, 90, 90), 1)
        cv2.rectangle(canvas, (bx, y + 1), (bx + max(1, int(bar_w * p)), y + row - 2), class_color(own), -1)
        if covered:  # a covered region: its bar crossed out in red
            cv2.line(canvas, (bx, y + row - 2), (bx + bar_w, y + 1), COVERED_COLOR, 1, cv2.LINE_AA)


__all__ = ["draw_faces", "class_color", "CLASS_COLORS", "REGION_ABBREVIATIONS"]
