"""Face ids and smoothed expressions for the web page's live webcam mode (``POST /predict`` with a ``session``).

The page sends a webcam frame every few hundred milliseconds with a ``session`` name and the frame's ``time_s``; each
session keeps its own :class:`~pcnn_fer.faces.identity.IdentityTracker` and
:class:`~pcnn_fer.faces.smoothing.ExpressionSmoother`, so the faces of its records carry ``face_id``,
``smooth_label`` and ``smooth_probabilities`` as ``pcnn predict`` gives them for a video. Memory is bounded: at most
:data:`MAX_SESSIONS` sessions (the least recently used is dropped) and each forgets people as its tracker does.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np

from ..defaults import REID_SECONDS, SMOOTH_SECONDS
from ..errors import UsageError
from ..faces.descriptors import describer_or_none
from ..faces.detect import Detection
from ..faces.identity import IdentityConfig, IdentityTracker
from ..faces.smoothing import ExpressionSmoother

__all__ = ["LiveSessions", "MAX_SESSIONS", "SESSION_PATTERN"]

#: Sessions kept at once (the least recently used is forgotten first).
MAX_SESSIONS = 32
#: What a session name may look like.
SESSION_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


class _LockedDescriber:
    """A face describer shared by the server's threads (dlib's network is not thread-safe)."""

    def __init__(self, describer: Any) -> None:
        self.describer, self.lock = describer, threading.Lock()

    def describe(self, rgb: np.ndarray, detections: list[Detection]) -> np.ndarray:
        with self.lock:
            return self.describer.describe(rgb, detections)


class _Session:
    def __init__(self, describer: Any, smooth_seconds: float, reid_seconds: float) -> None:
        self.identity = IdentityTracker(IdentityConfig(reid_seconds=reid_seconds), describer)
        self.smoother = ExpressionSmoother(smooth_seconds)
        self.started, self.last_t, self.lock = time.monotonic(), 0.0, threading.Lock()


class LiveSessions:
    """The live webcam sessions of one server (see the module docstring)."""

    def __init__(self, smooth_seconds: float = SMOOTH_SECONDS, reid_seconds: float = REID_SECONDS,
                 max_sessions: int = MAX_SESSIONS) -> None:
        self.smooth_seconds, self.reid_seconds, self.max_sessions = smooth_seconds, reid_seconds, max_sessions
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self._describer: Any = None
        self._described = False

    def _session(self, name: str) -> _Session:
        with self._lock:
            if not self._described:  # dlib's network is loaded at the first live frame, not at start-up
                found = describer_or_none()
                self._describer, self._described = (_LockedDescriber(found) if found else None), True
            session = self._sessions.get(name)
            if session is None:
                session = self._sessions[name] = _Session(self._describer, self.smooth_seconds, self.reid_seconds)
                while len(self._sessions) > self.max_sessions:
                    self._sessions.popitem(last=False)
            self._sessions.move_to_end(name)
            return session

    def follow(self, name: str, prediction: Any, time_s: float | None = None) -> None:
        """Give the faces of ``prediction`` (a :class:`~pcnn_fer.faces.recognizer.Prediction` of one webcam frame)
        their session's face ids and smoothed labels. ``time_s``: the frame's time as the page measured it (None:
        the server's clock); times never run backwards within a session."""
        if not SESSION_PATTERN.fullmatch(name):
            raise UsageError("session must be 1 to 64 letters, digits, '-' or '_'")
        if time_s is not None and not np.isfinite(time_s):
            raise UsageError("time_s must be a finite number of seconds")
        session = self._session(name)
        with session.lock:
            t = time.monotonic() - session.started if time_s is None else float(time_s)
            t = session.last_t = max(t, session.last_t)
            detections = [Detection(f.box, f.landmarks, f.detection_score, f.detector) for f in prediction]
            ids = session.identity.update(detections, t, prediction.image)
            classes = list(prediction.classes)
            for face, face_id in zip(prediction, ids, strict=True):
                smoothed = session.smoother.update(face_id, t, np.array([face.probabilities[c] for c in classes]))
                face.face_id, face.smooth_label = face_id, classes[session.smoother.label(face_id, smoothed)]
                face.smooth_probabilities = dict(zip(classes, map(float, smoothed), strict=True))
            session.smoother.keep_only(tr.face_id for tr in session.identity.tracks)
        prediction.time_s = t
