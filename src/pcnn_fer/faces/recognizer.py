"""Expression recognition in photos: detect → align onto the FER2013 template → classify, with a swappable
classifier backend.

    >>> from pcnn_fer.faces import Recognizer
    >>> result = Recognizer().predict("photo.jpg")          # path, PIL image or RGB array
    >>> [(f.label, round(f.score, 2)) for f in result]       # a list of faces
    >>> result.save("annotated.png")                        # or result.plot() → RGB array

Backends implement :class:`ClassifierBackend`: ``config`` (the model's :class:`~pcnn_fer.models.pcnn.PCNNConfig`:
classes, input size, normalisation) and ``__call__(batch)`` taking an already-normalised float32 NCHW batch and
returning ``(probs (N, C), region_probs (N, 5, C))``. Add one with :func:`register_backend` (e.g. ``"onnx"``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import UsageError
from ..models.pcnn import REGIONS, PCNNConfig
from .align import align_face
from .detect import Detection, FaceDetector, WholeImageDetector, create_detector
from .imageio import MAX_PIXELS, ImageInput, ImageLoadError, load_image, save_image


@runtime_checkable
class ClassifierBackend(Protocol):
    """A classifier for aligned, normalised face batches."""

    config: PCNNConfig

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``batch`` float32 (N, 3, S, S), already normalised → ``(probs (N, C), region_probs (N, 5, C))``."""
        ...


def _softmax(x: Any, dim: int) -> Any:
    import torch

    return torch.softmax(x.float(), dim=dim)


class TorchClassifier:
    """PyTorch backend: a PCNN (or a checkpoint loaded with :func:`pcnn_fer.weights.load_model`), by default
    rewritten for inference with :func:`pcnn_fer.models.fuse.optimize_for_inference` (identical outputs). Class
    probabilities are the softmax of the global (fused) logits; region probabilities the softmax of each of the
    five region heads."""

    name = "torch"

    def __init__(self, checkpoint: Any = "default", device: str = "cpu", optimize: bool = True) -> None:
        import torch

        from ..devices import torch_device
        from ..models.pcnn import PCNN
        from ..weights import load_model

        self.device = torch_device(device)
        model = checkpoint if isinstance(checkpoint, torch.nn.Module) else load_model(checkpoint, device=self.device)
        self.config: PCNNConfig = model.config
        if optimize and isinstance(model, PCNN) and self.config.input_size % 2 == 0:
            from ..models.fuse import optimize_for_inference

            model = optimize_for_inference(model)  # BN folded, eye/cheek trunks paired: same outputs, ~20% faster
        self.model = model.to(self.device).eval()

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Class and region probabilities of a normalised float32 NCHW batch."""
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
            global_logits, _, region_logits = self.model(x, return_regions=True)
            probs = _softmax(global_logits, 1).cpu().numpy()
            region_probs = _softmax(region_logits, 2).cpu().numpy()
        return probs, region_probs


#: Backend name → factory ``(checkpoint, device) -> ClassifierBackend``.
BACKENDS: dict[str, Callable[..., ClassifierBackend]] = {"torch": TorchClassifier}


def register_backend(name: str, factory: Callable[..., ClassifierBackend]) -> None:
    """Make ``Recognizer(backend=name)`` / ``pcnn predict --backend name`` build ``factory(checkpoint, device)``."""
    BACKENDS[name] = factory


def create_backend(backend: str | ClassifierBackend = "torch", checkpoint: Any = "default",
                   device: str = "cpu") -> ClassifierBackend:
    """A classifier backend from its name (see :data:`BACKENDS`), or a ready backend object returned as is."""
    if not isinstance(backend, str):
        if not callable(backend) or not hasattr(backend, "config"):
            raise TypeError("a backend object needs a config attribute and __call__(batch)")
        return backend
    if backend == "onnx" and backend not in BACKENDS:
        import pcnn_fer.deploy  # noqa: F401 - registers the onnxruntime backend (needs the deploy extra)
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[backend](checkpoint, device)


@dataclass
class Face:
    """One recognised face. ``box`` [x1, y1, x2, y2] and ``landmarks`` (5, 2) are in input-image pixels;
    ``probabilities`` maps every class to its probability; ``regions`` maps each PCNN region to its own class
    probabilities; ``crop`` is the aligned model input (uint8 RGB) when the recognizer keeps crops."""

    box: np.ndarray
    landmarks: np.ndarray | None
    label: str
    score: float
    probabilities: dict[str, float]
    regions: dict[str, dict[str, float]]
    detection_score: float = 1.0
    crop: np.ndarray | None = None

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        """JSON-ready record: box, landmarks, label, score, probabilities, regions (and detection_score)."""
        return {
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": None if self.landmarks is None else [[round(float(x), 1), round(float(y), 1)]
                                                              for x, y in self.landmarks],
            "label": self.label,
            "score": round(float(self.score), digits),
            "probabilities": {k: round(float(v), digits) for k, v in self.probabilities.items()},
            "regions": {r: {k: round(float(v), digits) for k, v in p.items()} for r, p in self.regions.items()},
            "detection_score": round(float(self.detection_score), digits),
        }


class Prediction(list):
    """The faces found in one image or video frame (a list of :class:`Face`), plus the ``image`` (RGB uint8),
    its ``source``, ``frame`` index (None for still images) and ``skipped`` (None, or why the input was unusable)."""

    def __init__(self, faces: Iterable[Face] = (), image: np.ndarray | None = None, source: str | None = None,
                 frame: int | None = None, skipped: str | None = None, classes: Sequence[str] = ()) -> None:
        super().__init__(faces)
        self.image, self.source, self.frame, self.skipped = image, source, frame, skipped
        self.classes = tuple(classes)

    def __repr__(self) -> str:
        where = f"{self.source}" + (f"#{self.frame}" if self.frame is not None else "")
        return f"Prediction({where!r}, {self.summary()})"

    def summary(self) -> str:
        """One human-readable line: skipped reason, ``no face found`` or the labels with scores."""
        if self.skipped:
            return f"skipped ({self.skipped})"
        if not self:
            return "no face found"
        faces = ", ".join(f"{f.label} {f.score:.2f}" for f in self)
        return f"{len(self)} face{'s' if len(self) != 1 else ''}: {faces}"

    def plot(self, regions: bool = True, landmarks: bool = True) -> np.ndarray:
        """The image annotated with boxes, labels, landmarks and per-region bars (RGB uint8)."""
        from .draw import draw_faces

        if self.image is None:
            raise ValueError(f"nothing to plot: {self.summary()}")
        return draw_faces(self.image, self, regions=regions, landmarks=landmarks)

    def save(self, path: str | Path) -> Path:
        """Write the annotated image (format from the suffix) and return its path."""
        return save_image(path, self.plot())

    def to_dict(self) -> dict[str, Any]:
        """JSON record: ``source``, ``frame``, ``skipped``, ``faces`` (see :meth:`Face.to_dict`)."""
        return {"source": self.source, "frame": self.frame, "skipped": self.skipped,
                "faces": [f.to_dict() for f in self]}

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)


class Recognizer:
    """Facial expression recognition on photos: detection, alignment and a classifier backend.

    ``checkpoint``: ``"default"`` (the bundled FERPlus model), a ``.safetensors`` path or a PCNN module;
    ``detector``: ``auto``/``dlib``/``cnn``/``haar``/``none`` (``none`` = inputs are already-cropped faces) or any
    object with ``detect(rgb) -> list[Detection]``; ``backend``: ``torch`` (see :data:`BACKENDS`) or a backend
    object; ``color``: ``gray`` feeds luminance (like FER2013 training data), ``rgb`` feeds colour, ``auto`` picks
    gray for models with inputs of at most 64 px (trained on 48×48 gray data) and rgb otherwise.
    """

    def __init__(self, checkpoint: Any = "default", device: str = "cpu", detector: str | FaceDetector = "auto",
                 backend: str | ClassifierBackend = "torch", batch_size: int = 32, color: str = "auto",
                 max_pixels: int = MAX_PIXELS, keep_crops: bool = False) -> None:
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        if color not in ("auto", "gray", "rgb"):
            raise UsageError(f"color must be auto, gray or rgb, got {color!r}")
        self.backend = create_backend(backend, checkpoint, device)
        self.config: PCNNConfig = self.backend.config
        self.detector = create_detector(detector)
        self.batch_size, self.max_pixels, self.keep_crops = int(batch_size), int(max_pixels), keep_crops
        self.gray = (self.config.input_size <= 64) if color == "auto" else color == "gray"

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names of the model outputs."""
        return tuple(self.config.classes)

    @property
    def input_size(self) -> int:
        """Side of the aligned face crops fed to the model."""
        return int(self.config.input_size)

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Aligned uint8 RGB crops → normalised float32 NCHW batch (luminance in all three channels when gray)."""
        x = np.stack([np.asarray(c, np.float32) for c in crops]) / 255.0  # N, S, S, 3
        if self.gray:
            luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
            x = np.repeat(luma[..., None], 3, axis=3)
        mean = np.asarray(self.config.mean, np.float32)
        std = np.asarray(self.config.std, np.float32)
        return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)

    def classify(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Class (N, C) and region (N, 5, C) probabilities of aligned crops, in batches of ``batch_size``."""
        n, c = len(crops), len(self.classes)
        if n == 0:
            return np.zeros((0, c), np.float32), np.zeros((0, len(REGIONS), c), np.float32)
        probs, regions = [], []
        for i in range(0, n, self.batch_size):
            p, r = self.backend(self.preprocess(crops[i:i + self.batch_size]))
            probs.append(np.asarray(p))
            regions.append(np.asarray(r))
        return np.concatenate(probs), np.concatenate(regions)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """The detector's faces in an RGB uint8 image."""
        return list(self.detector.detect(rgb))

    def predict(self, image: ImageInput, source: str | None = None, frame: int | None = None) -> Prediction:
        """Detect, align and classify every face of one image (a path, encoded bytes, a PIL image or an RGB array).

        Inputs that cannot be decoded give an empty :class:`Prediction` with ``skipped`` set (no exception);
        an image without faces gives an empty one with ``skipped`` None (``summary()`` says ``no face found``).
        """
        if source is None and isinstance(image, (str, Path)):
            source = str(image)
        try:
            rgb = load_image(image, max_pixels=self.max_pixels)
        except ImageLoadError as e:
            return Prediction(source=source, frame=frame, skipped=e.reason, classes=self.classes)
        return self.predict_array(rgb, source=source, frame=frame)

    def predict_array(self, rgb: np.ndarray, source: str | None = None, frame: int | None = None) -> Prediction:
        """:meth:`predict` for an RGB uint8 array that is already decoded."""
        detections = self.detect(rgb)
        size = self.input_size
        aligned = [align_face(rgb, d, size) for d in detections]
        probs, region_probs = self.classify([a.image for a in aligned])
        faces = []
        for det, crop, p, rp in zip(detections, aligned, probs, region_probs, strict=True):
            k = int(np.argmax(p))
            faces.append(Face(
                box=det.box, landmarks=det.landmarks, label=self.classes[k], score=float(p[k]),
                probabilities=dict(zip(self.classes, map(float, p), strict=True)),
                regions={name: dict(zip(self.classes, map(float, rp[j]), strict=True))
                         for j, name in enumerate(REGIONS)},
                detection_score=det.score, crop=crop.image if self.keep_crops else None))
        return Prediction(faces, image=rgb, source=source, frame=frame, classes=self.classes)

    def predict_stream(self, sources: Sequence[str | Path], every: int = 1,
                       max_frames: int | None = None) -> Iterator[Prediction]:
        """Predictions for SOURCE-style inputs (files, folders, globs, videos, webcam indices, as ``pcnn predict``
        takes them): one per image and one per analysed video frame, skipped ones included."""
        from .sources import expand_sources, iter_frames

        for source in expand_sources(sources):
            for frame in iter_frames(source, every=every, max_pixels=self.max_pixels, max_frames=max_frames):
                if frame.image is None:
                    yield Prediction(source=source.name, frame=frame.frame, skipped=frame.skipped,
                                     classes=self.classes)
                else:
                    yield self.predict_array(frame.image, source=source.name, frame=frame.frame)

    @property
    def detects(self) -> bool:
        """False when faces are not detected (every input is one already-cropped face)."""
        return not isinstance(self.detector, WholeImageDetector)


__all__ = ["Recognizer", "Prediction", "Face", "ClassifierBackend", "TorchClassifier", "BACKENDS",
           "register_backend", "create_backend"]
