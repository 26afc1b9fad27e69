"""dlib's 128-d face descriptors, used to re-identify a person (:mod:`pcnn_fer.faces.identity`).

The network is dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``, shipped with
``face_recognition_models``, the file :mod:`pcnn_fer.dlib_weights` reads for ``--init dlib``). Two faces of the same
person lie closer than about 0.6 (Euclidean); dlib reports 99.38 % on LFW with that threshold. A descriptor costs a
forward pass of the ResNet on a 150×150 chip (tens of milliseconds on a CPU core, docs/performance.md), so the
tracker asks for one only when a track needs re-identification.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .align import BOX_TEMPLATES, convert_box
from .detect import Detection, DetectorUnavailable, _import_dlib, _model_file
from .detection import LANDMARK_NAMES, landmark_names

__all__ = ["FaceDescriber", "DESCRIPTOR_SIZE", "SAME_PERSON_DISTANCE"]

#: Length of a dlib face descriptor.
DESCRIPTOR_SIZE = 128
#: dlib's own threshold: two descriptors closer than this are taken to be one person.
SAME_PERSON_DISTANCE = 0.6


class FaceDescriber:
    """Computes dlib face descriptors of detected faces (boxes + 5 landmarks) in an RGB uint8 frame.

    Raises :class:`~pcnn_fer.faces.detect.DetectorUnavailable` (naming the package to install) when dlib or
    ``face_recognition_models`` is missing.
    """

    def __init__(self) -> None:
        dlib = _import_dlib()
        self._dlib = dlib
        from ..dlib_weights import DLIB_MODEL_FILE  # its reader needs torch; this only the file's name

        self._net = dlib.face_recognition_model_v1(_model_file(DLIB_MODEL_FILE))
        self._shapes = None
        self.calls = 0

    def _shape(self, rgb: np.ndarray, det: Detection):
        dlib = self._dlib
        box = det.box
        if det.detector in BOX_TEMPLATES and det.detector != "dlib-hog":  # e.g. YuNet: onto dlib's box geometry
            box = convert_box(box, det.detector, "dlib-hog")
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        rect = dlib.rectangle(x1, y1, x2, y2)
        if det.landmarks is not None and len(det.landmarks) == 5 and landmark_names(det.detector) == LANDMARK_NAMES:
            points = [dlib.point(int(round(x)), int(round(y))) for x, y in det.landmarks]
            return dlib.full_object_detection(rect, points)
        # a detector without landmarks, or with other points than dlib's (YuNet): dlib's 5-point model in the box
        if self._shapes is None:
            self._shapes = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))
        return self._shapes(rgb, rect)

    def describe(self, rgb: np.ndarray, detections: Sequence[Detection]) -> np.ndarray:
        """(N, 128) float32 descriptors of ``detections`` in frame ``rgb``."""
        if not detections:
            return np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        shapes = [self._shape(rgb, d) for d in detections]
        self.calls += len(shapes)
        if len(shapes) == 1:
            return np.asarray(self._net.compute_face_descriptor(rgb, shapes[0]), np.float32)[None]
        full = self._dlib.full_object_detections()
        full.extend(shapes)
        return np.asarray([np.asarray(v) for v in self._net.compute_face_descriptor(rgb, full)], np.float32)


def describer_or_none() -> FaceDescriber | None:
    """A :class:`FaceDescriber`, or None when dlib's face-recognition network is not installed."""
    try:
        return FaceDescriber()
    except DetectorUnavailable:
        return None
