"""Annotated images that read well at any size: per face a box in the colour of its expression, a label (``#id``
and the smoothed label and probability for a tracked video face, else the label and score), the five landmarks, and
a panel of five per-region bars beside the box – one per PCNN region (LE, RE, LC, RC, M = left eye, right eye, left
cheek, right cheek, mouth), each as long as that region's probability for the face's label and coloured by the
region's own top class; a region the model's occlusion heads find covered has a red abbreviation and its bar
crossed out. A face answered ``uncertain`` (``--min-confidence``) is boxed in grey.

Sizes follow the face (text about a sixth of the face's side) with a legible minimum (:data:`MIN_TEXT_SCALE`).
Labels and panels are placed by :class:`~pcnn_fer.faces.layout.Layout`: inside the image, never on one another,
and off the faces when there is room (a leader line joins a label that had to move away). Region panels go beside
the box, never over a face or a label (no panel where there is no such room); faces under :data:`MIN_PANEL_FACE` px
get no panel (it would dwarf them). Faces are drawn in any object with ``box``, ``label``, ``score``,
``landmarks`` and ``regions`` (and optionally ``face_id``, ``smooth_label``, ``smooth_probabilities``,
``occlusion``, ``top_label``), such as
:class:`~pcnn_fer.faces.recognizer.Face`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from ..classes import REGIONS
from .layout import Layout, Rect, inside


class DrawableFace(Protocol):
    """What :func:`draw_faces` reads of a face."""

    box: Any
    label: str
    score: float
    landmarks: Any
    regions: dict[str, dict[str, float]]


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
#: Smallest text scale (cv2 Hershey simplex; about 9 px high): labels of tiny faces are never drawn smaller.
MIN_TEXT_SCALE = 0.4
#: Largest text scale.
MAX_TEXT_SCALE = 1.4
#: Faces narrower than this (canvas pixels) get their label but no region panel.
MIN_PANEL_FACE = 36
FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


def class_color(name: str) -> tuple[int, int, int]:
    """The drawing colour of a class."""
    return CLASS_COLORS.get(name, (160, 160, 160))


def _text(img: np.ndarray, text: str, org: tuple[int, int], scale: float, color, thickness: int) -> None:
    import cv2

    cv2.putText(img, text, org, FONT, scale, color, thickness, cv2.LINE_AA)


def shown_label(face: DrawableFace) -> tuple[str, float]:
    """The label a face is drawn with and its probability: for a tracked video face the person's smoothed label
    (``smooth_label``, ``smooth_probabilities``), else the frame's own."""
    smooth = getattr(face, "smooth_label", None)
    probabilities = getattr(face, "smooth_probabilities", None)
    if smooth and probabilities:
        return smooth, float(probabilities.get(smooth, face.score))
    return face.label, float(face.score)


def label_text(face: DrawableFace) -> str:
    """``#id label score%`` (``#id`` for tracked faces, whose label is the smoothed one, see :func:`shown_label`)."""
    face_id = getattr(face, "face_id", None)
    label, score = shown_label(face)
    return (f"#{face_id} " if face_id is not None else "") + f"{label} {score:.0%}"


def text_scale(side: float) -> float:
    """Text scale for a face of ``side`` canvas pixels: about a sixth of the side, within the legible bounds."""
    return float(np.clip(side / 150, MIN_TEXT_SCALE, MAX_TEXT_SCALE))


def draw_faces(rgb: np.ndarray, faces: Sequence[DrawableFace], regions: bool = True, landmarks: bool = True,
               placements: list[tuple[int, str, Rect]] | None = None) -> np.ndarray:
    """A copy of ``rgb`` with every face annotated (box, label, landmarks, region panel; see the module docstring).
    Small images are upscaled by an integer factor first (see :data:`MIN_CANVAS`). ``placements``, when given, is
    filled with ``(face index, "label" or "regions", (x1, y1, x2, y2))`` of what was drawn, in canvas pixels."""
    import cv2

    factor = int(np.ceil(MIN_CANVAS / max(1, min(rgb.shape[:2]))))
    factor = max(1, min(factor, int((MAX_UPSCALED_PIXELS / max(1, rgb.shape[0] * rgb.shape[1])) ** 0.5)))
    canvas = np.ascontiguousarray(rgb, dtype=np.uint8).copy()
    if factor > 1:
        canvas = cv2.resize(canvas, (rgb.shape[1] * factor, rgb.shape[0] * factor), interpolation=cv2.INTER_NEAREST)
    height, width = canvas.shape[:2]
    boxes = [tuple(int(round(v * factor)) for v in np.asarray(f.box, float)) for f in faces]
    layout = Layout(width, height, [_clip(b, width, height) for b in boxes])
    order = sorted(range(len(faces)), key=lambda k: -(boxes[k][2] - boxes[k][0]))  # large faces choose first
    for k in order:
        face, (x1, y1, x2, y2) = faces[k], boxes[k]
        side = max(1, min(x2 - x1, y2 - y1))
        color = class_color(shown_label(face)[0])
        thick = max(1, round(side / 60))
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thick, cv2.LINE_AA)
        if landmarks and face.landmarks is not None:
            for x, y in np.asarray(face.landmarks) * factor:
                cv2.circle(canvas, (int(round(x)), int(round(y))), max(1, thick), (0, 255, 0), -1, cv2.LINE_AA)
    spots = [(k, "label", _label(canvas, layout, faces[k], boxes[k])) for k in order]  # labels first, then panels
    if regions:
        spots += [(k, "regions", _region_bars(canvas, layout, faces[k], boxes[k])) for k in order
                  if faces[k].regions and min(boxes[k][2] - boxes[k][0], boxes[k][3] - boxes[k][1]) >= MIN_PANEL_FACE]
    if placements is not None:
        placements.extend((k, kind, rect) for k, kind, rect in spots if rect is not None)
    return canvas


def _clip(box: Sequence[int], width: int, height: int) -> Rect:
    x1, y1, x2, y2 = box
    return (max(0, x1), max(0, y1), min(width, x2 + 1), min(height, y2 + 1))


def _label(canvas: np.ndarray, layout: Layout, face: DrawableFace, box: Sequence[int]) -> Rect:
    """The label in a filled box of the face's colour: above the box, else below, else inside its top, else beside,
    else the nearest free spot (smaller text, down to :data:`MIN_TEXT_SCALE`, when the image is crowded); a leader
    line when it ended up away from the face. Only in an image with no free room left does it go over others."""
    import cv2

    x1, y1, x2, y2 = box
    text = label_text(face)
    own = _clip(box, layout.width, layout.height)
    scale = text_scale(max(1, min(x2 - x1, y2 - y1)))
    spot, next_scale = None, scale
    while spot is None:
        scale = next_scale
        thick = max(1, round(scale * 1.6))
        (tw, th), base = cv2.getTextSize(text, FONT, scale, thick)
        w, h, pad = tw + 6, th + base + 6, 3
        candidates = [(x1, y1 - h - pad, x1 + w, y1 - pad), (x1, y2 + pad, x1 + w, y2 + pad + h),
                      (x1, y1 + pad, x1 + w, y1 + pad + h), (x2 + pad, y1, x2 + pad + w, y1 + h),
                      (x1 - pad - w, y1, x1 - pad, y1 + h)]
        spot = layout.place(candidates, own)
        if spot is None and scale <= MIN_TEXT_SCALE:
            spot = inside(candidates[0], layout.width, layout.height)
            layout.placed.append(spot)
        next_scale = max(MIN_TEXT_SCALE, scale * 0.8)
    lx1, ly1, lx2, ly2 = spot
    if not (lx1 <= x2 + pad + 1 and x1 - pad - 1 <= lx2 and ly1 <= y2 + pad + 1 and y1 - pad - 1 <= ly2):
        cx, cy = min(max((lx1 + lx2) // 2, x1), x2), min(max((ly1 + ly2) // 2, y1), y2)
        cv2.line(canvas, ((lx1 + lx2) // 2, (ly1 + ly2) // 2), (cx, cy), class_color(shown_label(face)[0]), 1,
                 cv2.LINE_AA)
    cv2.rectangle(canvas, (lx1, ly1), (lx2 - 1, ly2 - 1), class_color(shown_label(face)[0]), -1)
    _text(canvas, text, (lx1 + 3, ly2 - base - 3), scale, (0, 0, 0), thick)
    return (lx1, ly1, lx2, ly2)


def _region_bars(canvas: np.ndarray, layout: Layout, face: DrawableFace, box: Sequence[int]) -> Rect | None:
    """Five bars beside the box (right, else left, else below or above; never over this face or another one, nor
    over a label; no panel when there is no such room): each region's probability of the face's label, coloured by
    the region's own top class."""
    import cv2

    x1, y1, x2, y2 = box
    side = max(1, min(x2 - x1, y2 - y1))
    font = text_scale(side) * 0.8
    (text_w, text_h), _ = cv2.getTextSize("RC", FONT, font, 1)
    row = text_h + 6
    label_w = text_w + 6
    bar_w = max(3 * label_w, side // 2)
    w, h, pad = label_w + bar_w + 6, row * len(REGIONS) + 4, 3
    own = _clip(box, layout.width, layout.height)
    candidates = [(x2 + pad, y1, x2 + pad + w, y1 + h), (x1 - pad - w, y1, x1 - pad, y1 + h),
                  (x1, y2 + pad, x1 + w, y2 + pad + h), (x1, y1 - pad - h, x1 + w, y1 - pad)]
    candidates = [c for c in candidates if 0 <= c[0] and c[2] <= layout.width and 0 <= c[1] and c[3] <= layout.height]
    if not candidates:
        return None  # no room anywhere beside the face: no panel rather than one over it
    spot = layout.place(candidates, own, search=False, cover_faces=False)
    if spot is None:
        return None
    left, top, right, bottom = spot
    if left < x2 and x1 < right and top < y2 and y1 < bottom:
        layout.placed.remove((left, top, right, bottom))
        return None
    overlay = canvas.copy()
    cv2.rectangle(overlay, (left, top), (right - 1, bottom - 1), (0, 0, 0), -1)
    canvas[top:bottom, left:right] = cv2.addWeighted(overlay, 0.6, canvas, 0.4, 0)[top:bottom, left:right]
    label = getattr(face, "top_label", face.label)  # the best class, also for a face answered "uncertain"
    occlusion = getattr(face, "occlusion", None)
    for i, name in enumerate(REGIONS):
        probs = face.regions.get(name, {})
        p = float(probs.get(label, 0.0))
        own_class = max(probs, key=probs.get) if probs else label
        y = top + 2 + i * row
        covered = occlusion is not None and occlusion.get(name, 0.0) >= COVERED_SCORE
        _text(canvas, REGION_ABBREVIATIONS[name], (left + 3, y + row - 4), font,
              COVERED_COLOR if covered else (255, 255, 255), 1)
        bx = left + label_w + 2
        cv2.rectangle(canvas, (bx, y + 2), (bx + bar_w, y + row - 3), COVERED_COLOR if covered else (110, 110, 110), 1)
        cv2.rectangle(canvas, (bx, y + 2), (bx + max(1, int(bar_w * p)), y + row - 3), class_color(own_class), -1)
        if covered:  # a covered region: its bar crossed out in red
            cv2.line(canvas, (bx, y + row - 3), (bx + bar_w, y + 2), COVERED_COLOR, 1, cv2.LINE_AA)
    return (left, top, right, bottom)


__all__ = ["draw_faces", "class_color", "label_text", "shown_label", "text_scale", "DrawableFace", "CLASS_COLORS",
           "REGION_ABBREVIATIONS", "MIN_CANVAS", "MAX_UPSCALED_PIXELS", "MIN_TEXT_SCALE", "MIN_PANEL_FACE"]
