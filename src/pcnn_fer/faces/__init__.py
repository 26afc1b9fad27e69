"""Faces in real photos and videos: detection (:mod:`.detect`), alignment onto the FER2013 crop geometry
(:mod:`.align`), robust decoding (:mod:`.imageio`), input expansion (:mod:`.sources`), decode-ahead and batching
(:mod:`.stream`), recognition (:mod:`.recognizer`), annotation (:mod:`.draw`), output files (:mod:`.outputs`) and
the ``pcnn predict`` command (:mod:`.cli`). Classifier backends live in :mod:`pcnn_fer.deploy.backends`."""

from .align import BOX_TEMPLATES, TEMPLATE_5PT, AlignedFace, align_face, alignment_matrix, similarity_transform
from .detect import (
    AutoDetector,
    Detection,
    DetectorUnavailable,
    DlibCNNDetector,
    DlibHOGDetector,
    FaceDetector,
    HaarDetector,
    WholeImageDetector,
    create_detector,
)
from .imageio import MAX_PIXELS, ImageLoadError, load_image
from .recognizer import Face, Prediction, Recognizer

__all__ = ["Recognizer", "Prediction", "Face", "Detection", "FaceDetector", "AutoDetector", "DlibHOGDetector",
           "DlibCNNDetector", "HaarDetector", "WholeImageDetector", "DetectorUnavailable", "create_detector",
           "TEMPLATE_5PT", "BOX_TEMPLATES", "AlignedFace", "align_face", "alignment_matrix", "similarity_transform",
           "ImageLoadError", "load_image", "MAX_PIXELS"]
