"""Similarity alignment of detected faces onto the crop geometry PCNN models were trained on.

The bundled models learn from FER2013/FERPlus 48×48 face crops, so a face from a photo must be warped so that its
eyes and nose land where they sit, on average, in those crops – only then do PCNN's five fixed regions (eyes,
cheeks, mouth) cover the right parts of the face. The template below was measured on FER2013 faces by
``benchmarks/face_template.py`` (procedure in docs/faces.md): every face was upscaled 48→192 (bicubic), edge-padded,
run through the same dlib HOG detector and 5-point landmark model used at inference, and the landmark positions
(divided by the face size) averaged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .detection import Detection

#: Mean 5-point landmark positions in FER2013 crops, as fractions of the crop size (x right, y down), in
#: :data:`~pcnn_fer.faces.detect.LANDMARK_NAMES` order. Measured by benchmarks/face_template.py (see docs/faces.md).
TEMPLATE_5PT = np.array([
    [0.747, 0.379],  # right_eye_outer (image right)
    [0.603, 0.390],  # right_eye_inner
    [0.245, 0.389],  # left_eye_outer (image left)
    [0.389, 0.394],  # left_eye_inner
    [0.502, 0.665],  # nose (base of the nose)
])

#: Mean YuNet landmark positions in the same crops (same procedure, YuNet at score 0.3; the 441 faces both YuNet and
#: dlib found), in :data:`~pcnn_fer.faces.detection.YUNET_LANDMARK_NAMES` order: eye centres, nose tip, mouth
#: corners. Aligning a face by its YuNet points onto these puts it where aligning it by its dlib points onto
#: :data:`TEMPLATE_5PT` does (measured agreement in docs/faces.md).
TEMPLATE_YUNET = np.array([
    [0.315, 0.382],  # left_eye (image left)
    [0.681, 0.384],  # right_eye
    [0.483, 0.597],  # nose_tip
    [0.348, 0.760],  # left_mouth
    [0.646, 0.765],  # right_mouth
])

#: Landmark template per detector whose five points are not dlib's (every other detector uses :data:`TEMPLATE_5PT`).
LANDMARK_TEMPLATES: dict[str, np.ndarray] = {"yunet": TEMPLATE_YUNET}

#: Mean mouth centre in the same crops (centroid of the 20 mouth points of dlib's 68-point model, measured offline
#: with ``--mouth`` only; never used at run time: it documents where the mouth falls relative to PCNN's crop rows).
TEMPLATE_MOUTH = np.array([0.505, 0.792])

#: Mean detector boxes [x1, y1, x2, y2] on the same crops (the faces both detectors found), per detector: used to
#: align faces that have no landmarks and to map one detector's boxes onto another's.
BOX_TEMPLATES: dict[str, np.ndarray] = {
    "dlib-hog": np.array([0.059, 0.123, 0.942, 1.005]),
    "haar": np.array([0.014, 0.005, 0.983, 0.975]),
    "yunet": np.array([0.106, -0.024, 0.896, 1.019]),
}

#: Number of FER2013 faces the constants above were averaged over.
TEMPLATE_FACES = 448  # of 600 sampled (FERPlus FER2013Train, evenly spaced)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping ``src`` points onto
    ``dst`` points (Umeyama 1991), as a 2×3 matrix."""
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError(f"need two matching point sets of at least 2 points, got {len(src)} and {len(dst)}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s**2).sum() / len(src)
    if var_s <= 1e-12:
        raise ValueError("degenerate source points (all equal)")
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sigma) @ sign) / var_s
    matrix = np.zeros((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = mu_d - scale * rot @ mu_s
    return matrix


def box_transform(box: np.ndarray, template_box: np.ndarray) -> np.ndarray:
    """Similarity (scale + translation) mapping a box onto a template box (same centre, same mean side)."""
    box = np.asarray(box, np.float64)
    template_box = np.asarray(template_box, np.float64)
    side = ((box[2] - box[0]) + (box[3] - box[1])) / 2
    t_side = ((template_box[2] - template_box[0]) + (template_box[3] - template_box[1])) / 2
    if side <= 0:
        raise ValueError(f"empty box {box.tolist()}")
    scale = t_side / side
    centre = (box[:2] + box[2:]) / 2
    t_centre = (template_box[:2] + template_box[2:]) / 2
    return np.array([[scale, 0.0, t_centre[0] - scale * centre[0]], [0.0, scale, t_centre[1] - scale * centre[1]]])


def convert_box(box: np.ndarray, source: str, target: str) -> np.ndarray:
    """Map a box from one detector's geometry onto another's, using their mean boxes on the same FER2013 faces."""
    to_unit = box_transform(box, BOX_TEMPLATES[source])  # image pixels → template (unit) coordinates
    return apply_affine(invert_affine(to_unit), BOX_TEMPLATES[target].reshape(2, 2)).reshape(4)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a 2×3 affine matrix."""
    full = np.vstack([np.asarray(matrix, np.float64), [0.0, 0.0, 1.0]])
    return np.linalg.inv(full)[:2]


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2×3 affine matrix to (N, 2) points."""
    points = np.asarray(points, np.float64).reshape(-1, 2)
    return points @ np.asarray(matrix)[:, :2].T + np.asarray(matrix)[:, 2]


def alignment_matrix(detection: Detection, size: int) -> np.ndarray:
    """2×3 matrix taking image pixels to the ``size``×``size`` aligned face: from the 5 landmarks when present, else
    from the box (mean box of its detector, dlib's for unknown detectors); ``none`` detections are just resized.
    The landmark template is the detector's own (:data:`LANDMARK_TEMPLATES`, else the dlib :data:`TEMPLATE_5PT`)."""
    template_points = LANDMARK_TEMPLATES.get(detection.detector, TEMPLATE_5PT)
    if detection.landmarks is not None and len(detection.landmarks) == len(template_points):
        return similarity_transform(detection.landmarks, template_points * size)
    if detection.detector == "none":
        x1, y1, x2, y2 = detection.box
        return np.array([[size / max(x2 - x1, 1e-6), 0.0, -x1 * size / max(x2 - x1, 1e-6)],
                         [0.0, size / max(y2 - y1, 1e-6), -y1 * size / max(y2 - y1, 1e-6)]])
    template = BOX_TEMPLATES.get(detection.detector, BOX_TEMPLATES["dlib-hog"])
    return box_transform(detection.box, template * size)


@dataclass
class AlignedFace:
    """An aligned face crop (size×size×3 uint8 RGB) and the 2×3 matrix from input pixels to crop pixels."""

    image: np.ndarray
    matrix: np.ndarray


def warp(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """Warp an image with a 2×3 matrix to ``size``×``size``, anti-aliased when shrinking (the face is warped at an
    integer multiple of ``size`` first and then area-averaged down), borders replicated."""
    import cv2

    matrix = np.asarray(matrix, np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    factor = int(min(8, max(1, np.floor(1.0 / max(scale, 1e-6)))))
    big = matrix * factor
    out = cv2.warpAffine(np.ascontiguousarray(rgb), big, (size * factor, size * factor), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)
    if factor > 1:
        out = cv2.resize(out, (size, size), interpolation=cv2.INTER_AREA)
    return out


def align_face(rgb: np.ndarray, detection: Detection, size: int) -> AlignedFace:
    """Cut one detected face out of an RGB image, aligned onto the FER2013 template at ``size``×``size``."""
    matrix = alignment_matrix(detection, size)
    return AlignedFace(warp(rgb, matrix, size), matrix)


__all__ = ["TEMPLATE_5PT", "TEMPLATE_YUNET", "LANDMARK_TEMPLATES", "TEMPLATE_MOUTH", "BOX_TEMPLATES", "TEMPLATE_FACES",
           "AlignedFace",
           "align_face", "alignment_matrix", "similarity_transform", "box_transform", "convert_box", "warp",
           "apply_affine", "invert_affine"]
