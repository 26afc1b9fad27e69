"""Face-aligned decoding of portrait datasets: the face detector and alignment template ``pcnn predict`` uses, run
once per image while a split is decoded (:func:`pcnn_fer.data.cache.decode_split`).

JAFFE's 256×256 portraits, RAF-DB ``original/``, AffectNet and image folders of photos are not face crops: squeezed
whole to 48 px, a model sees hair, background and shoulders. With face alignment each image is decoded as the face
``pcnn predict`` would classify: the detector (:func:`pcnn_fer.faces.detect.create_detector`, ``auto`` by default)
runs on the image, and the largest face it finds is warped onto the FER2013 5-point template
(:func:`pcnn_fer.faces.align.align_face`) at the model's input size.

An image in which no face is found is never dropped: it falls back to its **centre square** (side = the shorter
image side, centred; the crop ``pcnn predict --no-detect`` takes of such a square) resized to the input size, and
it is counted (:func:`face_summary`, printed and stored in metrics.json / results.json / cv.json).

The decode cache keys aligned crops by :meth:`FaceAligner.signature`: the detector's class and settings (nested
detectors included), the dlib version, a digest of the alignment template and the fallback rule, next to the input
size; changing any of them decodes afresh.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    from .datasets import DatasetReader

__all__ = ["ALIGN_VERSION", "ALIGN_YUNET_THRESHOLD", "FALLBACK", "FaceAligner", "describe_detector", "face_summary",
           "summary_line", "template_digest", "wants_alignment"]

#: Bumped when the aligned decoding itself changes (face choice, fallback), invalidating cached aligned crops.
ALIGN_VERSION = 1

#: YuNet face score the ``auto`` aligner takes a face at (the pictures of a portrait dataset each hold one face).
ALIGN_YUNET_THRESHOLD = 0.3

#: What an image without a detected face becomes (documented in docs/datasets.md).
FALLBACK = "centre square (side = shorter image side) resized to the input size"


class _HasFaceFlags(Protocol):
    face_found: np.ndarray | None


def wants_alignment(reader: DatasetReader, requested: bool | None) -> bool:
    """Whether to align faces when decoding ``reader``'s images: ``requested`` when given (``--align-faces`` /
    ``--no-align-faces``), else the dataset's default (on for JAFFE, whose images are whole-head portraits)."""
    return bool(reader.align_faces_default if requested is None else requested)


def template_digest() -> str:
    """Short digest of the alignment template (5-point landmarks and per-detector mean boxes) crops are warped onto."""
    from ..faces.align import BOX_TEMPLATES, LANDMARK_TEMPLATES, TEMPLATE_5PT

    h = hashlib.sha256(np.ascontiguousarray(TEMPLATE_5PT, dtype=np.float64).tobytes())
    for name in sorted(LANDMARK_TEMPLATES):
        h.update(name.encode())
        h.update(np.ascontiguousarray(LANDMARK_TEMPLATES[name], dtype=np.float64).tobytes())
    for name in sorted(BOX_TEMPLATES):
        h.update(name.encode())
        h.update(np.ascontiguousarray(BOX_TEMPLATES[name], dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def describe_detector(detector: Any, depth: int = 0) -> dict[str, Any]:
    """A detector's class, name and public scalar settings (threshold, upsampling, ...), nested detectors included:
    what decides which faces it finds."""
    out: dict[str, Any] = {"class": type(detector).__name__, "name": getattr(detector, "name", "")}
    for key, value in sorted(vars(detector).items()):
        if key.startswith("_"):
            continue
        if value is None or isinstance(value, (bool, int, float, str)):
            out[key] = value
        elif depth < 3 and callable(getattr(value, "detect", None)):
            out[key] = describe_detector(value, depth + 1)
    return out


def _dlib_version() -> str | None:
    try:
        return importlib.metadata.version("dlib-bin")
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.metadata.version("dlib")
        except importlib.metadata.PackageNotFoundError:
            return None


class FaceAligner:
    """The detector and alignment template of ``pcnn predict``, applied to one decoded dataset image at a time.

    ``detector``: a name for :func:`pcnn_fer.faces.detect.create_detector` (``auto``, ``yunet``, ``dlib-auto``,
    ``dlib``, ``cnn``, ``haar``) or a detector object; ``auto`` is YuNet at face score :data:`ALIGN_YUNET_THRESHOLD`
    (a portrait holds a face, so a weaker box is still the face; measured in docs/faces.md, "Alignment and
    accuracy"). ``detector_calls`` counts the images it ran the detector on.
    """

    def __init__(self, detector: Any = "auto") -> None:
        from ..faces.detect import create_detector, yunet_available

        if detector == "auto" and yunet_available():
            detector = create_detector("yunet", threshold=ALIGN_YUNET_THRESHOLD)
        self.detector = create_detector(detector)
        self.detector_calls = 0

    @property
    def name(self) -> str:
        """The detector's name (``auto``, ``dlib-hog``, ``haar``, ...)."""
        return str(getattr(self.detector, "name", type(self.detector).__name__))

    def signature(self) -> dict[str, Any]:
        """Everything aligned crops depend on besides the image and the size: part of the decode cache key."""
        return {"version": ALIGN_VERSION, "detector": describe_detector(self.detector), "dlib": _dlib_version(),
                "template": template_digest(), "fallback": FALLBACK}

    def align(self, image: Image.Image, size: int) -> tuple[np.ndarray, bool]:
        """The largest detected face of a decoded image (mode ``L`` or ``RGB``) aligned at ``size``×``size``, in the
        image's own mode (H×W for ``L``, H×W×3 for ``RGB``), and whether a face was found (else the centre-square
        fallback)."""
        from ..faces.align import align_face
        from ..faces.detect import Detection

        rgb = np.asarray(image.convert("RGB"), dtype=np.uint8)
        self.detector_calls += 1
        detections = list(self.detector.detect(rgb))
        if detections:
            face = max(detections, key=lambda d: d.width * d.height)
        else:
            h, w = rgb.shape[:2]
            side = min(h, w)
            x0, y0 = (w - side) / 2, (h - side) / 2
            face = Detection(np.array([x0, y0, x0 + side, y0 + side]), None, 0.0, "none")
        crop = align_face(rgb, face, size).image
        return (np.ascontiguousarray(crop[..., 0]) if image.mode == "L" else crop), bool(detections)


def face_summary(parts: Sequence[_HasFaceFlags], detector: str | None = None,
                 stems: Sequence[str] | None = None) -> dict[str, Any] | None:
    """Counts of faces found and centre-square fallbacks over decoded data (objects with a per-row ``face_found``,
    e.g. :class:`~pcnn_fer.data.loader.TensorData`); None when none of them was face-aligned. ``stems`` (names of
    the rows of a single part) adds up to five examples of images without a face."""
    flags = [np.asarray(p.face_found, dtype=bool) for p in parts if p.face_found is not None]
    if not flags:
        return None
    found = np.concatenate(flags)
    out: dict[str, Any] = {"images": int(found.size), "faces_found": int(found.sum()),
                           "no_face": int((~found).sum()), "fallback": FALLBACK}
    if detector is not None:
        out["detector"] = detector
    if stems is not None and len(flags) == 1:
        out["no_face_examples"] = [stems[i] for i in np.flatnonzero(~found)[:5].tolist()]
    return out


def summary_line(what: str, summary: dict[str, Any]) -> str:
    """One printed line: how many faces were found in ``what`` and how many images used the fallback."""
    line = f"face alignment, {what}: faces found in {summary['faces_found']} of {summary['images']} images"
    if summary.get("detector"):
        line += f" (detector {summary['detector']})"
    if summary["no_face"]:
        examples = summary.get("no_face_examples") or []
        line += (f"; {summary['no_face']} without a face use the centre-square fallback"
                 + (f" (e.g. {', '.join(examples)})" if examples else ""))
    return line
