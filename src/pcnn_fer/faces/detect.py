"""The face detectors and the factory that builds them by name.

Shipped detectors (all offline; the record and protocol they share are in :mod:`.detection`):

* ``auto`` – :class:`AutoDetector`, the default: YuNet (:class:`~pcnn_fer.faces.yunet.YuNetDetector`, a CNN with
  five landmarks whose weights ship in this package, run with onnxruntime or OpenCV); when neither runtime is
  installed, dlib HOG with dlib's CNN as a fallback on still images where HOG finds nothing, and one line saying so.
* :class:`DlibHOGDetector` – dlib's HOG + linear SVM frontal detector with dlib's **5-point** landmark model (from
  ``face-recognition-models``; the 5-point model is licensed for commercial use, the 68-point one is not and is never
  used here).
* :class:`DlibCNNDetector` – dlib's MMOD CNN detector (finds smaller and turned faces, but takes seconds per image
  on a CPU), with the same 5-point landmarks.
* :class:`HaarDetector` – OpenCV's Haar cascade, the fallback when dlib is not installed. Landmarks are added with
  the dlib 5-point model when dlib is available, else the aligner falls back to the box.
* :class:`WholeImageDetector` – no detection: the whole input is one already-cropped face (``--no-detect``).

Large images are downscaled to at most ``max_pixels`` for detection and the boxes are mapped back; dlib landmarks are
always predicted on the full-resolution image.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

from ..errors import UsageError
from .align import convert_box
from .detection import (
    LANDMARK_NAMES,
    Detection,
    DetectorUnavailable,
    FaceDetector,
    as_rgb_uint8,
    box_iou,
    detect_traced,
    downscale,
)
from .yunet import YuNetDetector

#: Detection runs on a copy of the image scaled down to at most this many pixels.
DETECT_MAX_PIXELS = 2_000_000
#: Default window score the HOG detector needs (chosen with ``benchmarks/detect_speed.py --scores``, docs/faces.md).
HOG_THRESHOLD = 0.25
#: The CNN fallback of the dlib ``auto`` detector runs on a copy of the image scaled down to at most this many pixels.
FALLBACK_MAX_PIXELS = 350_000
#: An image (or its scaled working copy) narrower or lower than this holds no face the detectors can find; dlib's
#: CNN raises an error on images under 7 px, so it is not run on them.
MIN_DETECT_SIDE = 16
#: How to get the default detector back when it cannot run (printed once by :class:`AutoDetector`).
YUNET_MISSING = ("the default yunet detector needs onnxruntime or OpenCV (pip install 'pcnn-fer[faces]'); "
                 "using dlib HOG instead")


def dlib_available() -> bool:
    """True when both ``dlib`` (dlib-bin) and ``face_recognition_models`` are importable."""
    return importlib.util.find_spec("dlib") is not None and _models_dir() is not None


def yunet_available() -> bool:
    """True when the YuNet detector can run (onnxruntime or OpenCV is importable)."""
    return importlib.util.find_spec("onnxruntime") is not None or importlib.util.find_spec("cv2") is not None


def _models_dir() -> Path | None:
    """Folder of the face-recognition-models model files, found without importing the package (its ``__init__``
    needs ``pkg_resources``, which recent setuptools no longer ship)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.origin:
        return None
    folder = Path(spec.origin).parent / "models"
    return folder if folder.is_dir() else None


def _model_file(name: str) -> str:
    folder = _models_dir()
    if folder is None or not (folder / name).is_file():
        raise DetectorUnavailable(f"{name} not found: pip install face-recognition-models")
    return str(folder / name)


def _import_dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - depends on the installation
        raise DetectorUnavailable("dlib is not installed: pip install dlib-bin face-recognition-models") from e
    return dlib


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """The gray (BT.601 luma) image of an RGB uint8 array."""
    import cv2

    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


class _DlibLandmarks:
    """dlib's 5-point shape predictor, shared by the detectors (loaded once per process)."""

    _predictor = None

    @classmethod
    def predict(cls, rgb: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The five landmarks (5, 2) of the face in ``box`` [x1, y1, x2, y2]."""
        dlib = _import_dlib()
        if cls._predictor is None:
            cls._predictor = dlib.shape_predictor(_model_file("shape_predictor_5_face_landmarks.dat"))
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        shape = cls._predictor(rgb, dlib.rectangle(x1, y1, x2, y2))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


class DlibHOGDetector:
    """dlib HOG frontal face detector + 5-point landmarks.

    ``upsample="auto"`` runs at the working size first and, only when nothing is found and the working image has at
    most ``upsample_max_pixels``, once more upsampled 2× (finds faces down to ~40 px instead of ~80 px).
    ``threshold`` is the SVM score a window needs (dlib's own default is 0.0; ours, :data:`HOG_THRESHOLD`, was
    chosen on real photos with ``benchmarks/detect_speed.py --scores``, see docs/faces.md). ``gray`` runs the
    detector on the luminance image (one gradient channel instead of three: faster, same faces on our test set);
    landmarks are always predicted on the colour image at full resolution.
    """

    name = "dlib-hog"

    def __init__(self, upsample: int | str = "auto", threshold: float = HOG_THRESHOLD,
                 max_pixels: int = DETECT_MAX_PIXELS, upsample_max_pixels: int = 1_000_000, landmarks: bool = True,
                 gray: bool = True) -> None:
        dlib = _import_dlib()
        if landmarks:
            _model_file("shape_predictor_5_face_landmarks.dat")
        if upsample != "auto" and (not isinstance(upsample, int) or upsample < 0):
            raise UsageError(f"upsample must be 'auto' or a count >= 0, got {upsample!r}")
        self._detector = dlib.get_frontal_face_detector()
        self.upsample, self.threshold, self.max_pixels = upsample, float(threshold), int(max_pixels)
        self.upsample_max_pixels, self.landmarks, self.gray = int(upsample_max_pixels), landmarks, gray

    def _run(self, image: np.ndarray, upsample: int) -> list[tuple[np.ndarray, float]]:
        rects, scores, _ = self._detector.run(image, upsample, self.threshold)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], float), float(s))
                for r, s in zip(rects, scores, strict=True)]

    def detect_traced(self, rgb: np.ndarray, thorough: bool = True) -> tuple[list[Detection], list[str]]:
        """:meth:`detect` plus what was tried (``dlib-hog 1x``, ``dlib-hog 2x``); ``thorough`` is accepted for the
        :class:`AutoDetector` interface (the 2× pass always follows the ``upsample`` setting)."""
        rgb = as_rgb_uint8(rgb)
        work = _luminance(rgb) if self.gray else rgb
        small, scale = downscale(work, self.max_pixels)
        tried = []

        def run(upsample: int) -> list[tuple[np.ndarray, float]]:
            tried.append(f"{self.name} {scale * 2 ** upsample:.2g}x")
            return self._run(small, upsample)

        if self.upsample == "auto":
            found = run(0)
            if not found and small.shape[0] * small.shape[1] <= self.upsample_max_pixels:
                found = run(1)
        else:
            found = run(int(self.upsample))
        detections = []
        for box, score in found:
            box = box / scale
            marks = _DlibLandmarks.predict(rgb, box) if self.landmarks else None
            detections.append(Detection(box, marks, score, self.name))
        return sorted(detections, key=lambda d: d.box[0]), tried

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, boxes and landmarks in its pixels, sorted left to right."""
        return self.detect_traced(rgb)[0]


class DlibCNNDetector:
    """dlib's MMOD CNN face detector (``mmod_human_face_detector.dat``) + 5-point landmarks. Accurate but slow on a
    CPU (seconds per 0.25 MP image); pick it with ``detector="cnn"``."""

    name = "dlib-cnn"

    def __init__(self, upsample: int = 1, max_pixels: int = 1_000_000, landmarks: bool = True) -> None:
        dlib = _import_dlib()
        self._detector = dlib.cnn_face_detection_model_v1(_model_file("mmod_human_face_detector.dat"))
        self.upsample, self.max_pixels, self.landmarks = int(upsample), int(max_pixels), landmarks

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, sorted left to right."""
        rgb = as_rgb_uint8(rgb)
        small, scale = downscale(rgb, self.max_pixels)
        detections = []
        if min(small.shape[:2]) < MIN_DETECT_SIDE:  # e.g. a 100000×1 strip
            return detections
        for d in self._detector(small, self.upsample):
            r = d.rect
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], float) / scale
            marks = _DlibLandmarks.predict(rgb, box) if self.landmarks else None
            detections.append(Detection(box, marks, float(d.confidence), self.name))
        return sorted(detections, key=lambda d: d.box[0])


class HaarDetector:
    """OpenCV Haar cascade (frontal faces). With ``landmarks="auto"`` the dlib 5-point model adds landmarks when dlib
    is installed (the Haar box is first mapped onto dlib's box geometry, measured on FER2013 faces, see
    :data:`pcnn_fer.faces.align.BOX_TEMPLATES`)."""

    name = "haar"

    def __init__(self, cascade: str = "haarcascade_frontalface_default.xml", scale_factor: float = 1.1,
                 min_neighbors: int = 5, min_size: int = 24, max_pixels: int = DETECT_MAX_PIXELS,
                 landmarks: bool | str = "auto") -> None:
        import cv2

        path = cascade if Path(cascade).is_file() else str(Path(cv2.data.haarcascades) / cascade)
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise DetectorUnavailable(f"cannot load the Haar cascade {path}")
        self.scale_factor, self.min_neighbors, self.min_size = float(scale_factor), int(min_neighbors), int(min_size)
        self.max_pixels = int(max_pixels)
        self.landmarks = dlib_available() if landmarks == "auto" else bool(landmarks)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, sorted left to right."""
        import cv2

        rgb = as_rgb_uint8(rgb)
        small, scale = downscale(rgb, self.max_pixels)
        gray = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, self.scale_factor, self.min_neighbors, minSize=(self.min_size, self.min_size),
            outputRejectLevels=True)
        detections = []
        for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1), strict=True):
            box = np.array([x, y, x + w, y + h], float) / scale
            marks = None
            if self.landmarks:
                marks = _DlibLandmarks.predict(rgb, convert_box(box, "haar", "dlib-hog"))
            detections.append(Detection(box, marks, float(weight), self.name))
        return sorted(detections, key=lambda d: d.box[0])


class WholeImageDetector:
    """No detection: the whole image is one already-cropped face (``--no-detect``)."""

    name = "none"

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """One detection covering the whole image, without landmarks."""
        h, w = np.asarray(rgb).shape[:2]
        return [Detection(np.array([0, 0, w, h], float), None, 1.0, self.name)]


class DlibAutoDetector:
    """dlib HOG (Haar when dlib is missing) and, when it finds nothing in a still image, dlib's CNN detector on a copy
    scaled to at most ``fallback_max_pixels`` (finds smaller and turned faces such as the cameraman in
    ``samples/camera.png``; about a second per image on a CPU, so it is skipped for video frames). The default
    before YuNet, and what ``auto`` runs when YuNet cannot. :meth:`detect_traced` says which detectors were tried."""

    name = "dlib-auto"

    def __init__(self, threshold: float | None = None, fallback: bool = True,
                 fallback_max_pixels: int = FALLBACK_MAX_PIXELS) -> None:
        if dlib_available():
            self.primary: DlibHOGDetector | HaarDetector = DlibHOGDetector(
                threshold=HOG_THRESHOLD if threshold is None else threshold)
        elif threshold is not None:
            raise UsageError("a detection threshold applies to the dlib HOG detector, and dlib is not installed: "
                             "pip install dlib-bin face-recognition-models")
        else:
            self.primary = HaarDetector()
        self.fallback = fallback and dlib_available()
        self.fallback_max_pixels = int(fallback_max_pixels)
        self._cnn: DlibCNNDetector | None = None

    def detect_traced(self, rgb: np.ndarray, thorough: bool = True) -> tuple[list[Detection], list[str]]:
        """Faces in an RGB uint8 image and the detectors tried; ``thorough=False`` (video frames) skips the slow
        CNN fallback."""
        found, tried = detect_traced(self.primary, rgb)
        if found or not thorough or not self.fallback:
            return found, tried
        if self._cnn is None:
            self._cnn = DlibCNNDetector(upsample=0, max_pixels=self.fallback_max_pixels)
        more, cnn_tried = detect_traced(self._cnn, rgb)
        return more, tried + cnn_tried

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, sorted left to right."""
        return self.detect_traced(rgb)[0]


class AutoDetector:
    """The default detector: YuNet (:class:`~pcnn_fer.faces.yunet.YuNetDetector`; ``threshold`` is its face score)
    when onnxruntime or OpenCV can run it, else :class:`DlibAutoDetector` (``threshold`` is then the HOG window
    score), with :attr:`note` saying why (printed once to stderr, and by ``pcnn predict``). The measurements behind
    the choice are in docs/faces.md."""

    name = "auto"

    def __init__(self, threshold: float | None = None) -> None:
        self.note = ""
        if yunet_available():
            self.primary: YuNetDetector | DlibAutoDetector = (
                YuNetDetector() if threshold is None else YuNetDetector(threshold=threshold))
        else:
            self.note = YUNET_MISSING
            if not dlib_available():
                raise DetectorUnavailable("no face detector can run: pip install 'pcnn-fer[faces]' (YuNet needs "
                                          "onnxruntime or OpenCV; the dlib fallback needs dlib-bin)")
            print(self.note, file=sys.stderr)
            self.primary = DlibAutoDetector(threshold=threshold)

    def detect_traced(self, rgb: np.ndarray, thorough: bool = True) -> tuple[list[Detection], list[str]]:
        """Faces in an RGB uint8 image and the detectors tried (``thorough=False``: video frames, no slow
        fallbacks)."""
        return detect_traced(self.primary, rgb, thorough)

    @property
    def window_face_side(self) -> float | None:
        """The face size the frame tracker scales windows to for the primary detector (None: its default)."""
        return getattr(self.primary, "window_face_side", None)

    def detect_window(self, rgb: np.ndarray) -> tuple[list[Detection], list[str]]:
        """The primary detector's window search (:meth:`YuNetDetector.detect_window`; for the dlib chain its own
        video-frame detection)."""
        window = getattr(self.primary, "detect_window", None)
        return window(rgb) if window is not None else detect_traced(self.primary, rgb, thorough=False)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 image, sorted left to right."""
        return self.detect_traced(rgb)[0]


DETECTORS = {"auto": AutoDetector, "yunet": YuNetDetector, "dlib-auto": DlibAutoDetector, "dlib": DlibHOGDetector,
             "hog": DlibHOGDetector, "dlib-hog": DlibHOGDetector, "cnn": DlibCNNDetector, "dlib-cnn": DlibCNNDetector,
             "haar": HaarDetector, "none": WholeImageDetector}


def create_detector(detector: str | FaceDetector = "auto", **options) -> FaceDetector:
    """A detector from a name (``auto``: :class:`AutoDetector`, YuNet or, when it cannot run, ``dlib-auto``;
    ``yunet``; ``dlib-auto``: dlib HOG with a CNN fallback, or Haar when dlib is missing; ``dlib``/``hog``, ``cnn``,
    ``haar``, ``none``) with constructor ``options``, or any object with a ``detect`` method, returned as is."""
    if not isinstance(detector, str):
        if not callable(getattr(detector, "detect", None)):
            raise TypeError(f"a detector needs a detect(rgb) method, got {type(detector).__name__}")
        return detector
    name = detector.lower()
    if name not in DETECTORS:
        raise UsageError(f"unknown face detector {detector!r}; choose {', '.join(sorted(set(DETECTORS)))}")
    return DETECTORS[name](**options)


__all__ = ["Detection", "FaceDetector", "AutoDetector", "YuNetDetector", "DlibAutoDetector", "DlibHOGDetector",
           "DlibCNNDetector", "HaarDetector", "WholeImageDetector", "DetectorUnavailable", "LANDMARK_NAMES", "box_iou",
           "create_detector", "detect_traced", "dlib_available", "yunet_available", "DETECT_MAX_PIXELS",
           "HOG_THRESHOLD", "FALLBACK_MAX_PIXELS", "MIN_DETECT_SIDE", "YUNET_MISSING"]
