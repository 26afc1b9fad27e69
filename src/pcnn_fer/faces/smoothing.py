"""Per-person temporal smoothing of expression probabilities (``pcnn predict --smooth SECONDS``).

Each face id keeps an exponential moving average of its class probabilities with a time constant of ``seconds``:
a frame ``dt`` seconds after the previous one of that person moves the average by ``1 - exp(-dt / seconds)`` of the
way to the frame's probabilities. The weight depends on time, not on frames, so the same setting behaves alike at
any frame rate or ``--every``; after a long absence the first frame back counts almost fully. ``seconds = 0`` turns
smoothing off (the smoothed values are the frame's own). How the default was chosen: docs/faces.md.

The smoothed *label* (:meth:`ExpressionSmoother.label`) has hysteresis: a person's label changes only when another
class's smoothed probability exceeds the current label's by more than ``margin`` (default
:data:`DEFAULT_LABEL_MARGIN`), so a face hovering between two close classes does not flicker between them.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from ..defaults import SMOOTH_SECONDS
from ..errors import UsageError

__all__ = ["ExpressionSmoother", "DEFAULT_SMOOTH_SECONDS"]

#: Default time constant in seconds (docs/faces.md, "People in videos").
DEFAULT_SMOOTH_SECONDS = SMOOTH_SECONDS
#: Default lead (in probability) another class needs over the current smoothed label to replace it.
DEFAULT_LABEL_MARGIN = 0.1


class ExpressionSmoother:
    """Exponential moving average of class probabilities per face id, in time (see the module docstring)."""

    def __init__(self, seconds: float = DEFAULT_SMOOTH_SECONDS, margin: float | None = None) -> None:
        seconds = float(seconds)
        if not np.isfinite(seconds) or seconds < 0:
            raise UsageError(f"smoothing time constant must be a finite number of seconds >= 0, got {seconds!r}")
        self.seconds = seconds
        #: Hysteresis of the label (0 when smoothing is off: the label is then the frame's own).
        self.margin = (DEFAULT_LABEL_MARGIN if seconds else 0.0) if margin is None else float(margin)
        self._state: dict[int, tuple[float, np.ndarray]] = {}
        self._labels: dict[int, int] = {}

    def update(self, face_id: int, t: float, probabilities: np.ndarray) -> np.ndarray:
        """The smoothed probabilities of person ``face_id`` after its frame at time ``t`` (seconds)."""
        p = np.asarray(probabilities, np.float64)
        previous = self._state.get(face_id)
        if previous is None or self.seconds == 0:
            smoothed = p.copy()
        else:
            weight = 1.0 - np.exp(-max(0.0, t - previous[0]) / self.seconds)
            smoothed = previous[1] + weight * (p - previous[1])
        self._state[face_id] = (t, smoothed)
        return smoothed

    def label(self, face_id: int, smoothed: np.ndarray) -> int:
        """The index of person ``face_id``'s smoothed label given their latest ``smoothed`` probabilities: the
        previous label unless another class leads it by more than :attr:`margin`."""
        best = int(np.argmax(smoothed))
        previous = self._labels.get(face_id)
        if previous is not None and smoothed[best] - smoothed[previous] <= self.margin:
            best = previous
        self._labels[face_id] = best
        return best

    def keep_only(self, face_ids: Iterable[int]) -> None:
        """Forget every person not in ``face_ids`` (those the identity tracker no longer remembers)."""
        keep = set(face_ids)
        for face_id in [k for k in self._state if k not in keep]:
            del self._state[face_id]
            self._labels.pop(face_id, None)

    def reset(self) -> None:
        """Forget everyone (a new source)."""
        self._state.clear()
        self._labels.clear()
