"""Faces followed from one video frame to the next by optical flow instead of detection (used by
:class:`~pcnn_fer.faces.track.FrameTracker` between window searches).

Each face's five landmarks and a 3×3 grid of points inside its box are tracked with pyramidal Lucas-Kanade
(``cv2.calcOpticalFlowPyrLK``), forward and then backward; points that do not come back within
:data:`MAX_BACK_ERROR` pixels are dropped. The face moves by the median displacement of its good points, its size by
the median ratio of their distances to their centroid, and its landmarks by their own flow (or the median
displacement where a landmark's point was dropped). A face with fewer than :data:`MIN_GOOD` good points, or faces
whose boxes overlap (a face passing behind another would drag the hidden one's points along), make
:func:`follow_faces` return None: the caller detects instead.
"""

from __future__ import annotations

import numpy as np

from .detect import Detection, box_iou

__all__ = ["follow_faces", "MIN_GOOD", "MAX_BACK_ERROR"]

#: Good points a face needs to be followed.
MIN_GOOD = 8
#: Largest forward-backward error (pixels) of a good point.
MAX_BACK_ERROR = 1.0


def _points(face: Detection) -> np.ndarray:
    x1, y1, x2, y2 = face.box
    grid = [(x1 + (x2 - x1) * fx, y1 + (y2 - y1) * fy) for fy in (0.3, 0.5, 0.75) for fx in (0.3, 0.5, 0.7)]
    marks = face.landmarks if face.landmarks is not None else np.zeros((0, 2))
    return np.vstack([marks, np.array(grid)]).astype(np.float32)


def follow_faces(previous: np.ndarray, current: np.ndarray, faces: list[Detection]) -> list[Detection] | None:
    """``faces`` of gray frame ``previous`` moved onto gray frame ``current``, or None when they cannot be followed
    reliably (see the module docstring)."""
    import cv2

    if not faces or any(box_iou(a.box, b.box) > 0 for i, a in enumerate(faces) for b in faces[i + 1:]):
        return None
    sets = [_points(f) for f in faces]
    points = np.vstack(sets).reshape(-1, 1, 2)
    params = {"winSize": (21, 21), "maxLevel": 3,
              "criteria": (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)}
    ahead, ok, _ = cv2.calcOpticalFlowPyrLK(previous, current, points, None, **params)
    back, ok_back, _ = cv2.calcOpticalFlowPyrLK(current, previous, ahead, None, **params)
    good = (ok.ravel() == 1) & (ok_back.ravel() == 1) & \
        (np.linalg.norm((back - points).reshape(-1, 2), axis=1) <= MAX_BACK_ERROR)
    ahead = ahead.reshape(-1, 2)
    followed, start = [], 0
    for face, pts in zip(faces, sets, strict=True):
        n = len(pts)
        keep, old, new = good[start:start + n], pts, ahead[start:start + n]
        start += n
        if keep.sum() < MIN_GOOD:
            return None
        shift = np.median(new[keep] - old[keep], axis=0)
        spread_old = np.linalg.norm(old[keep] - old[keep].mean(0), axis=1)
        spread_new = np.linalg.norm(new[keep] - new[keep].mean(0), axis=1)
        scale = float(np.median(spread_new / np.maximum(spread_old, 1e-3)))
        if not 0.8 <= scale <= 1.25:
            return None
        centre = (face.box[:2] + face.box[2:]) / 2 + shift
        half = (face.box[2:] - face.box[:2]) / 2 * scale
        marks = None
        if face.landmarks is not None:
            k = len(face.landmarks)
            marks = np.where(keep[:k, None], new[:k], face.landmarks + shift)
        followed.append(Detection(np.concatenate([centre - half, centre + half]), marks, face.score, face.detector))
    return followed
