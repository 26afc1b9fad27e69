"""Expression recognition in photos: detect → align onto the FER2013 template → classify, with a swappable
classifier backend (:func:`pcnn_fer.backends.dispatch.create_backend`: ``auto``, ``torch``, ``onnx`` or an object).

    >>> from pcnn_fer.faces import Recognizer
    >>> result = Recognizer().predict("photo.jpg")          # path, PIL image or RGB array
    >>> [(f.label, round(f.score, 2)) for f in result]       # a list of faces
    >>> result.save("annotated.png")                        # or result.plot() → RGB array
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..backends.dispatch import ClassifierBackend, create_backend
from ..errors import UsageError
from ..models.calibration import UNCERTAIN, check_min_confidence
from ..models.pcnn import REGIONS, PCNNConfig
from .align import AlignedFace, align_face
from .detect import (
    MIN_DETECT_SIDE,
    Detection,
    FaceDetector,
    WholeImageDetector,
    create_detector,
    detect_traced,
)
from .draw import draw_faces
from .imageio import MAX_PIXELS, ImageInput, ImageLoadError, load_image, save_image
from .pipeline import finish_group, predict_groups, start_group
from .quality import faces_quality
from .sources import Frame, Source, expand_sources, iter_frames
from .stream import chunks, frames_per_chunk, prefetch
from .track import DEFAULT_REFRESH, FrameTracker
from .track_result import TrackResult
from .tracking import TrackingConfig, image_sequence, track_frames


@dataclass
class Face:
    """One recognised face. ``box`` [x1, y1, x2, y2] (clipped to the image; ``box_unclipped`` holds the detector's
    box when it reached past an edge, else None) and ``landmarks`` (5, 2) are in input-image pixels;
    ``probabilities`` maps every class to its probability; ``regions`` maps each PCNN region to its own class
    probabilities; ``detection_score`` and ``detector`` come from the face detector; ``crop`` is the aligned model
    input (uint8 RGB) when the recognizer keeps crops. Faces of tracked video frames (:meth:`Recognizer.track_stream`)
    also carry the person's ``face_id`` and the smoothed ``smooth_label`` and ``smooth_probabilities``
    (:mod:`pcnn_fer.faces.smoothing`); still images leave them None. ``label`` is ``uncertain`` when the recognizer
    has a ``min_confidence`` above ``score`` (the probabilities stay); ``occlusion`` maps each region to the
    probability that it is covered (models with occlusion heads, ``pcnn occlusion``; None otherwise) and
    ``quality`` holds size, sharpness, brightness and head pose (:func:`~pcnn_fer.faces.quality.face_quality`)."""

    box: np.ndarray
    landmarks: np.ndarray | None
    label: str
    score: float
    probabilities: dict[str, float]
    regions: dict[str, dict[str, float]]
    detection_score: float = 1.0
    detector: str = ""
    crop: np.ndarray | None = None
    face_id: int | None = None
    smooth_label: str | None = None
    smooth_probabilities: dict[str, float] | None = None
    occlusion: dict[str, float] | None = None
    quality: dict[str, Any] | None = None
    box_unclipped: np.ndarray | None = None

    @property
    def top_label(self) -> str:
        """The most probable class (``label`` unless the face was answered ``uncertain``)."""
        return max(self.probabilities, key=self.probabilities.get) if self.probabilities else self.label

    def to_dict(self, digits: int = 4) -> dict[str, Any]:
        """JSON-ready record: box, landmarks, label, score, probabilities, regions and detection_score (and
        ``box_unclipped`` for a face cut by the image edge); tracked faces
        start with ``face_id`` and add ``smooth_label`` and ``smooth_probabilities``; then ``occlusion`` (models
        with occlusion heads) and ``quality``."""
        tracked = {} if self.face_id is None else {"face_id": int(self.face_id)}
        smoothed = {} if self.smooth_probabilities is None else {
            "smooth_label": self.smooth_label,
            "smooth_probabilities": {k: round(float(v), digits) for k, v in self.smooth_probabilities.items()}}
        return {
            **tracked,
            "box": [round(float(v), 1) for v in self.box],
            "landmarks": None if self.landmarks is None else [[round(float(x), 1), round(float(y), 1)]
                                                              for x, y in self.landmarks],
            "label": self.label,
            "score": round(float(self.score), digits),
            "probabilities": {k: round(float(v), digits) for k, v in self.probabilities.items()},
            "regions": {r: {k: round(float(v), digits) for k, v in p.items()} for r, p in self.regions.items()},
            "detection_score": round(float(self.detection_score), digits),
            **({} if self.box_unclipped is None else {"box_unclipped": [round(float(v), 1)
                                                                        for v in self.box_unclipped]}),
            **smoothed,
            **({} if self.occlusion is None else
               {"occlusion": {r: round(float(v), digits) for r, v in self.occlusion.items()}}),
            **({} if self.quality is None else {"quality": self.quality}),
        }


class Prediction(list):
    """The faces found in one image or video frame (a list of :class:`Face`), plus the ``image`` (RGB uint8),
    its ``source``, ``frame`` index (None for still images), ``skipped`` (None, or why the input was unusable),
    ``tried`` (the detectors run on it, in order), and for stream results the ``origin``
    (:class:`~pcnn_fer.faces.sources.Source`) and the video's ``fps``. Tracked video frames also carry ``time_s``
    (seconds into the source) and ``people``, the source's :class:`~pcnn_fer.faces.people.PeopleSummary` so far."""

    def __init__(self, faces: Iterable[Face] = (), image: np.ndarray | None = None, source: str | None = None,
                 frame: int | None = None, skipped: str | None = None, classes: Sequence[str] = (),
                 tried: Sequence[str] = (), origin: Source | None = None, fps: float | None = None) -> None:
        super().__init__(faces)
        self.image, self.source, self.frame, self.skipped = image, source, frame, skipped
        self.classes, self.tried, self.origin, self.fps = tuple(classes), tuple(tried), origin, fps
        self.time_s: float | None = None
        self.people: Any = None

    def __repr__(self) -> str:
        where = f"{self.source}" + (f"#{self.frame}" if self.frame is not None else "")
        return f"Prediction({where!r}, {self.summary()})"

    def summary(self) -> str:
        """One human-readable line: skipped reason, ``no face found`` (with the detectors tried when a fallback ran)
        or the labels with scores (and the detector, when a fallback found them)."""
        if self.skipped:
            return f"skipped ({self.skipped})"
        fallback = len({t.split()[0] for t in self.tried}) > 1
        if not self:
            return "no face found" + (f" (tried {', '.join(self.tried)})" if fallback else "")
        faces = ", ".join(f"{f.label} {f.score:.2f}" for f in self)
        found_by = f" (found by {self[0].detector} after {self.tried[0].split()[0]} found none)" if fallback else ""
        return f"{len(self)} face{'s' if len(self) != 1 else ''}: {faces}{found_by}"

    def plot(self, regions: bool = True, landmarks: bool = True) -> np.ndarray:
        """The image annotated with boxes, labels, landmarks and per-region bars (RGB uint8)."""
        if self.image is None:
            raise ValueError(f"nothing to plot: {self.summary()}")
        return draw_faces(self.image, self, regions=regions, landmarks=landmarks)

    def save(self, path: str | Path) -> Path:
        """Write the annotated image (format from the suffix) and return its path."""
        return save_image(path, self.plot())

    def relabel(self, min_confidence: float | None) -> Prediction:
        """Decide every face's ``label`` again (in place; returns self): ``uncertain`` when its score is below
        ``min_confidence``, else its most probable class (None: always the most probable)."""
        threshold = check_min_confidence(min_confidence)
        for face in self:
            face.label = UNCERTAIN if threshold is not None and face.score < threshold else face.top_label
        return self

    def to_dict(self) -> dict[str, Any]:
        """JSON record: ``source``, ``frame`` (and ``time_s`` for tracked video frames), ``skipped``, ``faces`` (see
        :meth:`Face.to_dict`)."""
        timed = {} if self.time_s is None else {"time_s": round(float(self.time_s), 4)}
        return {"source": self.source, "frame": self.frame, **timed, "skipped": self.skipped,
                "faces": [f.to_dict() for f in self]}

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`to_dict` as a JSON string."""
        return json.dumps(self.to_dict(), **kwargs)


#: The source recorded for arrays given to :meth:`Recognizer.predict_array`.
_ARRAY = Source("image", "")


class Recognizer:
    """Facial expression recognition on photos: detection, alignment and a classifier backend.

    ``checkpoint``: ``"default"`` (the bundled FERPlus model), a ``.safetensors`` path or a PCNN module;
    ``detector``: ``auto``/``dlib``/``cnn``/``haar``/``none`` (``none`` = inputs are already-cropped faces) or any
    object with ``detect(rgb) -> list[Detection]``; ``backend``: ``auto`` (onnxruntime when installed, else torch),
    ``torch``, ``onnx`` (see :func:`~pcnn_fer.backends.dispatch.create_backend`) or a backend object; ``color``:
    ``gray`` feeds luminance (like FER2013 training data), ``rgb`` feeds colour, ``auto`` picks gray for models
    with inputs of at most 64 px (trained on 48×48 gray data) and rgb otherwise; ``detect_every``: video frames get
    the full detector every this many analysed frames and a search around the previous frame's faces in between
    (:class:`~pcnn_fer.faces.track.FrameTracker`; 1 = the full detector on every frame).
    """

    def __init__(self, checkpoint: Any = "default", device: str = "cpu", detector: str | FaceDetector = "auto",
                 backend: str | ClassifierBackend = "auto", batch_size: int = 32, color: str = "auto",
                 max_pixels: int = MAX_PIXELS, keep_crops: bool = False, detect_every: int = DEFAULT_REFRESH,
                 min_confidence: float | None = None) -> None:
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {batch_size}")
        self.min_confidence = check_min_confidence(min_confidence)
        if color not in ("auto", "gray", "rgb"):
            raise UsageError(f"color must be auto, gray or rgb, got {color!r}")
        self.backend = create_backend(backend, checkpoint, device)
        self.config: PCNNConfig = self.backend.config
        self.detector = create_detector(detector)
        self.tracker = FrameTracker(self.detector, refresh=detect_every)
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

    @property
    def detects(self) -> bool:
        """False when faces are not detected (every input is one already-cropped face)."""
        return not isinstance(self.detector, WholeImageDetector)

    def preprocess(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Aligned uint8 RGB crops → normalised float32 NCHW batch (luminance in all three channels when gray)."""
        x = np.stack([np.asarray(c, np.float32) for c in crops]) / 255.0  # N, S, S, 3
        if self.gray:
            luma = x @ np.array([0.299, 0.587, 0.114], np.float32)
            x = np.repeat(luma[..., None], 3, axis=3)
        mean = np.asarray(self.config.mean, np.float32)
        std = np.asarray(self.config.std, np.float32)
        return np.ascontiguousarray(((x - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)

    def classify(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Class (N, C) and region (N, 5, C) probabilities and region occlusion scores (N, 5; NaN for a model or
        backend without occlusion heads) of aligned crops, in batches of ``batch_size``."""
        return self.run_model(self.preprocess_batches(crops))

    def preprocess_batches(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`preprocess` of aligned crops in batches of ``batch_size`` (what :meth:`run_model` takes)."""
        return [self.preprocess(crops[i:i + self.batch_size]) for i in range(0, len(crops), self.batch_size)]

    def run_model(self, batches: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`classify` of already preprocessed batches (the backend's work alone: it releases the GIL, so
        another thread may prepare the next batches meanwhile)."""
        if not batches:
            c = len(self.classes)
            return (np.zeros((0, c), np.float32), np.zeros((0, len(REGIONS), c), np.float32),
                    np.zeros((0, len(REGIONS)), np.float32))
        probs, regions, occlusion = [], [], []
        outputs = getattr(self.backend, "outputs", None)  # backends of this package; any other: probabilities only
        for batch in batches:
            if outputs is not None:
                out = outputs(batch)
                p, r, o = out["probs"], out["region_probs"], out["occlusion"]
            else:
                (p, r), o = self.backend(batch), None
            probs.append(np.asarray(p))
            regions.append(np.asarray(r))
            occlusion.append(np.full((len(batch), len(REGIONS)), np.nan, np.float32) if o is None else np.asarray(o))
        return np.concatenate(probs), np.concatenate(regions), np.concatenate(occlusion)

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
        """:meth:`predict` for an RGB uint8 array that is already decoded (``frame`` set: a video frame, for which
        the detector skips its slow fallback)."""
        result = self.predict_frames([Frame(_ARRAY, frame, rgb)])[0]
        result.source, result.origin = source, None
        return result

    def predict_frames(self, frames: Sequence[Frame]) -> list[Prediction]:
        """Predictions for decoded frames (skipped ones included), the faces of all of them classified together."""
        return finish_group(self, start_group(self, frames))

    def find_faces(self, frame: Frame) -> tuple[list[Detection], list[str], list[AlignedFace]]:
        """(detections, detectors tried, aligned crops) of one decoded frame (nothing for a skipped one); video
        frames go through the frame-search tracker (:attr:`tracker`)."""
        if frame.image is None or self._too_small(frame) is not None:
            return [], [], []
        if frame.frame is None or not self.detects:
            detections, tried = detect_traced(self.detector, frame.image, thorough=frame.frame is None)
        else:
            detections, tried = self.tracker.detect_traced(frame.source, frame.image)
        return detections, tried, [align_face(frame.image, d, self.input_size) for d in detections]

    def make_prediction(self, frame: Frame, located: tuple[list[Detection], list[str], list[AlignedFace]],
                        probs: np.ndarray, region_probs: np.ndarray, occlusion: np.ndarray | None = None,
                        quality: Sequence[dict[str, Any]] | None = None) -> Prediction:
        """The :class:`Prediction` of ``frame`` from :meth:`find_faces`' result, the faces' class (N, C) and
        region (N, 5, C) probabilities, their region occlusion scores (N, 5; NaN or None: not measured) and their
        :meth:`face_quality` (None: measured here)."""
        detections, tried, aligned = located
        if occlusion is None:
            occlusion = np.full((len(detections), len(REGIONS)), np.nan, np.float32)
        if quality is None:
            quality = self.face_quality([frame], [located])
        shape = frame.image.shape[:2] if frame.image is not None else None
        top = np.argmax(probs, axis=1).tolist() if len(detections) else []
        probs, region_probs = np.asarray(probs).tolist(), np.asarray(region_probs).tolist()
        faces = [self._face(d, a, top[j], probs[j], region_probs[j], occlusion[j], quality[j], shape)
                 for j, (d, a) in enumerate(zip(detections, aligned, strict=True))]
        too_small = self._too_small(frame)
        return Prediction(faces, image=None if too_small else frame.image, source=frame.source.name,
                          frame=frame.frame, skipped=frame.skipped or too_small, classes=self.classes, tried=tried,
                          origin=frame.source, fps=frame.fps)

    def face_quality(self, frames: Sequence[Frame],
                     located: Sequence[tuple[list[Detection], list[str], list[AlignedFace]]]) -> list[dict[str, Any]]:
        """:func:`~pcnn_fer.faces.quality.face_quality` of every face :meth:`find_faces` found in ``frames``
        (boxes clipped to their image), measured over all of them at once."""
        crops, boxes, marks, names = [], [], [], []
        for frame, (detections, _, aligned) in zip(frames, located, strict=True):
            shape = frame.image.shape[:2] if frame.image is not None else None
            for det, crop in zip(detections, aligned, strict=True):
                crops.append(crop.image)
                boxes.append(self._clip(det.box, shape)[0])
                marks.append(det.landmarks)
                names.append(det.detector)
        return faces_quality(crops, boxes, marks, names)

    def _too_small(self, frame: Frame) -> str | None:
        """Why a decoded frame is skipped before detection (narrower or lower than :data:`MIN_DETECT_SIDE`, e.g.
        a 100000×1 strip, on which dlib's CNN raises), or None."""
        if frame.image is None or not self.detects or min(frame.image.shape[:2]) >= MIN_DETECT_SIDE:
            return None
        return (f"{frame.image.shape[1]}×{frame.image.shape[0]} pixels, too small to hold a face: face detection "
                f"needs {MIN_DETECT_SIDE} px on each side")

    @staticmethod
    def _clip(box: np.ndarray, shape: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """(box clipped to an image of ``shape``, the detector's box when it reached past an edge, else None)."""
        if shape is None:
            return box, None
        clipped = np.clip(box, 0, [shape[1], shape[0], shape[1], shape[0]])
        return clipped, None if np.array_equal(clipped, box) else box

    def _face(self, det: Detection, crop: AlignedFace, k: int, p: list[float], rp: list[list[float]],
              occ: np.ndarray, quality: dict[str, Any], shape: tuple[int, int] | None = None) -> Face:
        """One :class:`Face` from its detection, crop, top class ``k``, class and region probabilities (lists),
        occlusion scores and quality."""
        uncertain = self.min_confidence is not None and p[k] < self.min_confidence
        box, unclipped = self._clip(det.box, shape)
        return Face(box=box, box_unclipped=unclipped, landmarks=det.landmarks,
                    label=UNCERTAIN if uncertain else self.classes[k],
                    score=p[k], probabilities=dict(zip(self.classes, p, strict=True)),
                    regions={name: dict(zip(self.classes, rp[j], strict=True)) for j, name in enumerate(REGIONS)},
                    detection_score=det.score, detector=det.detector,
                    crop=crop.image if self.keep_crops else None,
                    occlusion=None if np.isnan(occ).any() else dict(zip(REGIONS, map(float, occ), strict=True)),
                    quality=quality)

    def predict_stream(self, sources: Sequence[str | Path | Source], every: int = 1,
                       max_frames: int | None = None, overlap: bool | None = None) -> Iterator[Prediction]:
        """Predictions for SOURCE-style inputs (files, folders, globs, videos, webcam indices, as ``pcnn predict``
        takes them, or :class:`~pcnn_fer.faces.sources.Source` objects): one per image and one per analysed video
        frame, skipped ones included, in input order. Inputs are decoded ahead in a background thread, the faces of
        :func:`~pcnn_fer.faces.stream.frames_per_chunk` frames are classified together, and the model classifies
        one such group while the next is aligned and preprocessed where it has room beside it (``overlap`` None:
        :func:`~pcnn_fer.faces.pipeline.model_leaves_cores`; True/False: always/never; the same results)."""
        expanded = expand_sources(sources)
        frames = (f for s in expanded for f in iter_frames(s, every=every, max_pixels=self.max_pixels,
                                                            max_frames=max_frames))
        size = frames_per_chunk(self.detects, self.batch_size)
        yield from predict_groups(self, chunks(prefetch(frames, depth=2 * size), size), overlap=overlap)

    def track_stream(self, sources: Sequence[str | Path | Source], every: int = 1, max_frames: int | None = None,
                     config: TrackingConfig | None = None, **options: Any) -> Iterator[Prediction]:
        """:meth:`predict_stream` with people over time: the faces of video and webcam frames carry a ``face_id``
        stable for one person through the source, ``smooth_label`` and ``smooth_probabilities``; frames carry
        ``time_s`` and ``people`` (the source's :class:`~pcnn_fer.faces.people.PeopleSummary` so far). ``config``
        or keyword ``options`` (``smooth_seconds``, ``reid_seconds``, ``reid``, ``change``, ``reuse_seconds``):
        :class:`~pcnn_fer.faces.tracking.TrackingConfig`."""
        config = config or TrackingConfig(**options)
        expanded = expand_sources(sources)
        frames = (f for s in expanded for f in iter_frames(s, every=every, max_pixels=self.max_pixels,
                                                            max_frames=max_frames))
        size = frames_per_chunk(self.detects, self.batch_size)
        yield from track_frames(self, chunks(prefetch(frames, depth=max(4, 2 * size)), size), every=every,
                                config=config)

    def track(self, source: str | Path | Source | int, every: int = 1, max_frames: int | None = None,
              keep_rows: bool = True, fps: float | None = None, **options: Any) -> TrackResult:
        """The people of one video file, webcam (an int index) or image sequence (a folder or glob of frames, in
        name order, at ``fps`` frames per second; 25 when None) as a :class:`~pcnn_fer.faces.track_result.
        TrackResult` (``.summary()``, ``.to_pandas()``, ``.plot_timeline(path)``); ``keep_rows=False`` keeps only
        the summary (memory does not grow with the video). Options as for :meth:`track_stream`."""
        spec = str(source) if isinstance(source, int) else source
        expanded = expand_sources([spec])
        if expanded and all(s.kind == "image" for s in expanded) and (len(expanded) > 1 or fps):
            config = options.pop("config", None) or TrackingConfig(**options)
            frames = image_sequence(str(source), expanded, fps, every, self.max_pixels, max_frames)
            stream = track_frames(self, chunks(prefetch(frames, depth=4), 1), every=every, config=config)
        elif len(expanded) != 1 or expanded[0].kind not in ("video", "webcam", "sequence"):
            raise UsageError(f"track takes one video file, webcam index or image sequence, got {source!r}")
        else:
            stream = self.track_stream(expanded, every=every, max_frames=max_frames, **options)
        people, rows, skipped = None, [], 0
        for result in stream:
            if result.frame is None:
                raise UsageError(f"{result.source}: {result.skipped}")
            people = result.people if result.people is not None else people
            skipped += result.skipped is not None
            if keep_rows:
                rows.extend((result.source, result.frame, result.time_s, f.face_id, *map(float, f.box), f.label,
                             f.score, f.smooth_label, *f.probabilities.values(), *f.smooth_probabilities.values())
                            for f in result)
        if people is None:
            raise UsageError(f"{source}: no frame could be read")
        return TrackResult(people, rows, skipped)


__all__ = ["Recognizer", "Prediction", "Face"]
