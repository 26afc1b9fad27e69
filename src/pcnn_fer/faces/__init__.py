"""Faces in real photos and videos: detection (:mod:`.detect`), alignment onto the FER2013 crop geometry
(:mod:`.align`), robust decoding (:mod:`.imageio`), input expansion (:mod:`.sources`), recognition
(:mod:`.recognizer`), annotation (:mod:`.draw`) and the ``pcnn predict`` command (:mod:`.cli`)."""

from .align import BOX_TEMPLATES, TEMPLATE_5PT, AlignedFace, align_face, alignment_matrix, similarity_transform
from .detect import (
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
from .recognizer import (
    BACKENDS,
    ClassifierBackend,
    Face,
    Prediction,
    Recognizer,
    TorchClassifier,
    create_backend,
    register_backend,
)

__all__ = ["Recognizer", "Prediction", "Face", "ClassifierBackend", "TorchClassifier", "BACKENDS", "register_backend",
           "create_backend", "Detection", "FaceDetector", "DlibHOGDetector", "DlibCNNDetector", "HaarDetector",
           "WholeImageDetector", "DetectorUnavailable", "create_detector", "TEMPLATE_5PT", "BOX_TEMPLATES",
           "AlignedFace", "align_face", "alignment_matrix", "similarity_transform", "ImageLoadError", "load_image",
           "MAX_PIXELS"]
