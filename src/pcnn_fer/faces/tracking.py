"""People over time: the work of :meth:`Recognizer.track_stream <pcnn_fer.faces.recognizer.Recognizer.track_stream>`.

For every analysed frame of a video or webcam: find the faces (:meth:`Recognizer.find_faces`, which reuses the
previous frame's faces between full detections), give each a ``face_id`` (:class:`~.identity.IdentityTracker`),
classify the faces that changed, smooth each person's probabilities (:class:`~.smoothing.ExpressionSmoother`) and
add them to the source's :class:`~.people.PeopleSummary`.

Speed (docs/performance.md, "People in videos"):

* **Classify only when a face changed.** A person's aligned crop is classified again when its mean absolute gray
  difference from the crop last classified for that person exceeds :attr:`TrackingConfig.change` (0…255 scale) or
  when that classification is older than :attr:`TrackingConfig.reuse_seconds`; otherwise its probabilities are
  reused. ``change=0`` classifies every face of every frame.
* **Classify while the next frame is searched.** Classification runs in a worker thread (the classifier backends
  release the GIL) while the main thread detects the next frame's faces; results still come out in frame order.
  Decoding runs in its own thread ahead of both (:func:`~.stream.prefetch`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..defaults import REID_SECONDS
from ..errors import UsageError
from .descriptors import FaceDescriber, describer_or_none
from .identity import IdentityConfig, IdentityTracker
from .people import PeopleSummary
from .pipeline import Group, finish_group, model_leaves_cores, start_group
from .smoothing import DEFAULT_SMOOTH_SECONDS, ExpressionSmoother
from .sources import ASSUMED_FPS, Frame, Source, image_sequence
from .stream import STILL_KINDS

__all__ = ["TrackingConfig", "SourceTracking", "track_frames", "image_sequence", "ASSUMED_FPS"]


@dataclass(frozen=True)
class TrackingConfig:
    """Settings of people tracking (``pcnn predict --smooth``, ``--reid-seconds``, ``--no-reid``,
    ``--reclassify-change``)."""

    #: Time constant of the per-person exponential smoothing in seconds; 0 = off.
    smooth_seconds: float = DEFAULT_SMOOTH_SECONDS
    #: How long a person who left is remembered for re-identification by appearance.
    reid_seconds: float = REID_SECONDS
    #: Re-identify by dlib descriptors (False: motion only; a person who returns gets a new id).
    reid: bool = True
    #: Mean absolute gray difference (0…255) from the last classified crop above which a face is classified again.
    change: float = 6.0
    #: A face's probabilities are reused for at most this many seconds.
    reuse_seconds: float = 0.4

    def __post_init__(self) -> None:
        for name in ("smooth_seconds", "reid_seconds", "change", "reuse_seconds"):
            value = getattr(self, name)
            if not np.isfinite(value) or value < 0:
                raise UsageError(f"{name} must be a finite number >= 0, got {value!r}")


class _Classified:
    """The last classification of one person: the gray crop it saw, when, and where its probabilities will be."""

    __slots__ = ("gray", "t", "future", "index")

    def __init__(self, gray: np.ndarray, t: float, future: Future, index: int) -> None:
        self.gray, self.t, self.future, self.index = gray, t, future, index

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        probs, regions, occlusion = self.future.result()
        return probs[self.index], regions[self.index], occlusion[self.index]


def _gray(crop: np.ndarray) -> np.ndarray:
    return np.asarray(crop, np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


class SourceTracking:
    """The state of one video or webcam: ids, smoothing, the last classifications and the people summary."""

    def __init__(self, recognizer: Any, source: Source, fps: float | None, every: int, config: TrackingConfig,
                 describer: FaceDescriber | None) -> None:
        self.recognizer, self.source, self.config = recognizer, source, config
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else None
        self.period = every / (self.fps or ASSUMED_FPS)
        self.identity = IdentityTracker(IdentityConfig(reid_seconds=config.reid_seconds), describer)
        self.smoother = ExpressionSmoother(config.smooth_seconds)
        self.people = PeopleSummary(source.name, recognizer.classes, self.fps, self.period)
        self.last: dict[int, _Classified] = {}
        self.classified = self.reused = 0
        self._clock: float | None = None
        self._previous_t: float | None = None

    def _time(self, frame: Frame) -> tuple[float, float]:
        """(time in seconds, seconds the frame stands for)."""
        if self.source.kind == "webcam":  # a camera's declared rate is not to be trusted: the wall clock is
            now = time.monotonic()
            self._clock = now if self._clock is None else self._clock
            t = now - self._clock
            period = self.period if self._previous_t is None else min(max(t - self._previous_t, 0.0), 1.0)
            self._previous_t = t
            return t, period
        return (frame.frame or 0) / (self.fps or ASSUMED_FPS), self.period

    def prepare(self, frame: Frame, submit) -> dict[str, Any]:
        """Detect, identify and align the faces of ``frame``; submit the crops that need classifying (``submit``
        takes a list of crops and returns a future of (probs, regions)). Returns the job for :meth:`finish`."""
        located = self.recognizer.find_faces(frame)
        detections, _, aligned = located
        t, period = self._time(frame)
        ids = self.identity.update(detections, t, frame.image)
        plan: list[tuple[int, np.ndarray, _Classified | None]] = []
        crops = []
        for face_id, crop in zip(ids, aligned, strict=True):
            gray = _gray(crop.image)
            last = self.last.get(face_id)
            if last is not None and t - last.t <= self.config.reuse_seconds and \
                    float(np.abs(gray - last.gray).mean()) <= self.config.change:
                plan.append((face_id, gray, last))
            else:
                plan.append((face_id, gray, None))
                crops.append(crop.image)
        future = submit(crops) if crops else None
        sources: list[_Classified] = []
        index = 0
        for face_id, gray, reuse in plan:
            if reuse is None:
                reuse = self.last[face_id] = _Classified(gray, t, future, index)
                index += 1
            sources.append(reuse)
        self.classified += len(crops)
        self.reused += len(plan) - len(crops)
        return {"frame": frame, "located": located, "ids": ids, "sources": sources, "t": t, "period": period}

    def finish(self, job: dict[str, Any]) -> Any:
        """The :class:`~pcnn_fer.faces.recognizer.Prediction` of a prepared frame, with ids, smoothed labels and
        ``time_s``; the person summary is updated."""
        c = len(self.recognizer.classes)
        results = [s.result() for s in job["sources"]]
        probs = np.stack([r[0] for r in results]) if results else np.zeros((0, c), np.float32)
        regions = np.stack([r[1] for r in results]) if results else np.zeros((0, 5, c), np.float32)
        occlusion = np.stack([r[2] for r in results]) if results else np.zeros((0, 5), np.float32)
        prediction = self.recognizer.make_prediction(job["frame"], job["located"], probs, regions, occlusion)
        t, period = job["t"], job["period"]
        prediction.time_s, prediction.people = t, self.people
        self.people.add_frame(t, period)
        classes = self.recognizer.classes
        for face, face_id, p in zip(prediction, job["ids"], probs, strict=True):
            smoothed = self.smoother.update(face_id, t, p)
            label = classes[self.smoother.label(face_id, smoothed)]
            face.face_id, face.smooth_label = face_id, label
            face.smooth_probabilities = dict(zip(classes, map(float, smoothed), strict=True))
            self.people.add(face_id, t, period, label, smoothed)
        if len(self.last) > 2 * len(self.identity.tracks) + 16:  # forget people the tracker forgot (bounded memory)
            remembered = {tr.face_id for tr in self.identity.tracks}
            self.last = {k: v for k, v in self.last.items() if k in remembered}
            self.smoother.keep_only(remembered)
        return prediction


class _Inline:
    """A finished future (classification run in the calling thread)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def result(self) -> Any:
        return self.value


def track_frames(recognizer: Any, groups: Iterable[list[Frame]], every: int = 1,
                 config: TrackingConfig | None = None, describer: FaceDescriber | None | str = "auto",
                 overlap: bool = True) -> Iterator[Any]:
    """Predictions for groups of decoded frames (:func:`~pcnn_fer.faces.stream.chunks`), in order: video and webcam
    frames tracked (see the module docstring), groups of still images classified together as
    :meth:`Recognizer.predict_frames` does (the model classifying one group while the next is prepared where it
    leaves cores free, :func:`~pcnn_fer.faces.pipeline.predict_groups`). ``describer``: ``"auto"`` (dlib's
    descriptors when installed and ``config.reid``), None (motion only) or a describer. ``overlap``: classify in a
    worker thread while the next frame is searched."""
    config = config or TrackingConfig()
    if isinstance(describer, str):
        describer = describer_or_none() if config.reid else None
    pool = ThreadPoolExecutor(1, thread_name_prefix="pcnn-classify") if overlap else None

    def submit(crops: list[np.ndarray]) -> Any:
        if pool is None:
            return _Inline(recognizer.classify(crops))
        return pool.submit(recognizer.classify, crops)

    run = None if pool is None or not model_leaves_cores(recognizer.backend) else (
        lambda batches: pool.submit(recognizer.run_model, batches))
    state: SourceTracking | None = None
    pending: Group | tuple[SourceTracking, dict[str, Any]] | None = None  # started, not yet yielded

    def take() -> list[Any]:
        """The pending predictions (none left pending)."""
        nonlocal pending
        done, pending = pending, None
        if done is None:
            return []
        return finish_group(recognizer, done) if isinstance(done, Group) else [done[0].finish(done[1])]

    try:
        for group in groups:
            for frame in group:
                tracked = frame.source.kind not in STILL_KINDS and frame.frame is not None
                if not tracked:  # still images: classified while the next group is prepared
                    started = start_group(recognizer, group, run)
                    yield from take()
                    pending = started
                    break
                if frame.image is None:
                    yield from take()  # keep the order
                if state is None or state.source is not frame.source:
                    state = SourceTracking(recognizer, frame.source, frame.fps, every, config, describer)
                    recognizer.tracker.reset()
                if frame.image is None:  # an unreadable frame: reported in order, nothing to track
                    skipped = recognizer.predict_frames([frame])[0]
                    skipped.people = state.people
                    yield skipped
                    continue
                job = (state, state.prepare(frame, submit))
                yield from take()
                pending = job
        yield from take()
    except Exception:
        yield from take()  # an error keeps its place: what was started before it comes out first
        raise
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

