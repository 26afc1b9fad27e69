"""The result of :meth:`Recognizer.track <pcnn_fer.faces.recognizer.Recognizer.track>`: the people of one whole
video or webcam session.

    >>> result = Recognizer().track("interview.mp4")
    >>> result.summary()["people"][0]["dominant"]          # the summary.json entry of the source
    >>> result.to_pandas()                                   # one row per face per frame (needs pandas)
    >>> result.plot_timeline("interview_timeline.png")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .people import PeopleSummary
from .timeline import plot_timeline

__all__ = ["TrackResult", "row_columns"]


def row_columns(classes: Sequence[str]) -> list[str]:
    """Columns of :meth:`TrackResult.to_pandas`: frame, time, id, box, raw and smoothed label and probabilities."""
    return ["source", "frame", "time_s", "face_id", "x1", "y1", "x2", "y2", "label", "score", "smooth_label",
            *(f"p_{c}" for c in classes), *(f"smooth_{c}" for c in classes)]


class TrackResult:
    """People of one source: ``people`` (:class:`~pcnn_fer.faces.people.PeopleSummary`), ``rows`` (one tuple per face
    per analysed frame, columns :func:`row_columns`; empty when the rows were not kept), ``frames`` analysed and
    ``skipped`` unreadable frames."""

    def __init__(self, people: PeopleSummary, rows: list[tuple], skipped: int = 0) -> None:
        self.people, self.rows, self.skipped = people, rows, skipped

    @property
    def classes(self) -> tuple[str, ...]:
        """The model's class names."""
        return self.people.classes

    @property
    def face_ids(self) -> list[int]:
        """The ids of the people seen, in order."""
        return sorted(self.people.people)

    def __len__(self) -> int:
        return len(self.people.people)

    def __repr__(self) -> str:
        return f"TrackResult({self.people.line()!r})"

    def summary(self) -> dict[str, Any]:
        """This source's entry of ``summary.json``: ``source, duration_s, fps, frames, people`` with, per person,
        ``face_id, first_s, last_s, seconds, dominant, shares, segments``."""
        return self.people.to_dict()

    def to_json(self, **kwargs: Any) -> str:
        """:meth:`summary` as a JSON string."""
        return json.dumps(self.summary(), **kwargs)

    def to_pandas(self) -> Any:
        """A pandas DataFrame with one row per face per analysed frame (pandas is an optional extra)."""
        try:
            import pandas as pd
        except ImportError:
            raise UsageError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(self.rows, columns=row_columns(self.classes))

    def plot_timeline(self, path: str | Path) -> Path:
        """Write the per-person timeline PNG (:mod:`pcnn_fer.faces.timeline`) to ``path`` and return it."""
        return plot_timeline(self.people, path)
