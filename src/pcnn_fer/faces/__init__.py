"""Faces in real photos and videos: detection (:mod:`.detect`), alignment onto the FER2013 crop geometry
(:mod:`.align`), robust decoding (:mod:`.imageio`), input expansion (:mod:`.sources`), decode-ahead and batching
(:mod:`.stream`), recognition (:mod:`.recognizer`), annotation (:mod:`.draw`), output files (:mod:`.outputs`) and
the work of ``pcnn predict`` (:mod:`.predict_command`; its parser is in :mod:`pcnn_fer.cli.predict`). Classifier
backends live in :mod:`pcnn_fer.backends.dispatch`.

Importing this package imports none of them: the names below are loaded on first use (:mod:`pcnn_fer.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_attributes

if TYPE_CHECKING:
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

__getattr__, __dir__ = lazy_attributes(__name__, {
    **dict.fromkeys(["BOX_TEMPLATES", "TEMPLATE_5PT", "AlignedFace", "align_face", "alignment_matrix",
                     "similarity_transform"], "align"),
    **dict.fromkeys(["AutoDetector", "Detection", "DetectorUnavailable", "DlibCNNDetector", "DlibHOGDetector",
                     "FaceDetector", "HaarDetector", "WholeImageDetector", "create_detector"], "detect"),
    **dict.fromkeys(["MAX_PIXELS", "ImageLoadError", "load_image"], "imageio"),
    **dict.fromkeys(["Face", "Prediction", "Recognizer"], "recognizer"),
})

__all__ = ["Recognizer", "Prediction", "Face", "Detection", "FaceDetector", "AutoDetector", "DlibHOGDetector",
           "DlibCNNDetector", "HaarDetector", "WholeImageDetector", "DetectorUnavailable", "create_detector",
           "TEMPLATE_5PT", "BOX_TEMPLATES", "AlignedFace", "align_face", "alignment_matrix", "similarity_transform",
           "ImageLoadError", "load_image", "MAX_PIXELS"]
