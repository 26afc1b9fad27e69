"""Per-person summaries of one source, accumulated as frames stream (memory does not grow with the video's length).

:class:`PeopleSummary` is fed one observation per face per analysed frame: the person's ``face_id``, the frame's
time, how long the frame stands for (``period``: ``--every`` frames at the video's rate) and the smoothed label and
probabilities. Per person it keeps

* ``first_s`` (start of the first frame showing the face) and ``last_s`` (end of the last one: where the face left),
* ``seconds`` shown and the seconds per smoothed label (``shares`` = label seconds / seconds; ``dominant`` = the label
  with the largest share),
* ``segments``: runs of one smoothed label ``[start_s, end_s)``; a run also ends where the person is unseen for more
  than :data:`GAP_SECONDS` (shorter detector misses are bridged),
* a timeline of the smoothed probabilities in at most :data:`MAX_BINS` time bins (when full, neighbouring bins are
  merged and the bin width doubles), which :mod:`pcnn_fer.faces.timeline` plots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["PeopleSummary", "Person", "GAP_SECONDS", "MAX_BINS"]

#: A person unseen for longer than this (seconds) ends their current segment.
GAP_SECONDS = 0.5
#: Time bins kept per person for the timeline.
MAX_BINS = 1024


@dataclass
class Person:
    """What is known about one face id (see the module docstring)."""

    face_id: int
    first_s: float
    last_s: float
    classes: tuple[str, ...]
    bin_s: float
    seconds: float = 0.0
    label_seconds: dict[str, float] = field(default_factory=dict)
    segments: list[list[Any]] = field(default_factory=list)  # [label, start_s, end_s]
    bin_sums: np.ndarray | None = None
    bin_counts: np.ndarray | None = None
    bin_start: float = 0.0

    def add(self, t: float, period: float, label: str, probabilities: np.ndarray) -> None:
        """One analysed frame at ``t`` showing this person with smoothed ``label`` and ``probabilities``."""
        end = t + period
        self.seconds += period
        self.label_seconds[label] = self.label_seconds.get(label, 0.0) + period
        last = self.segments[-1] if self.segments else None
        if last is not None and last[0] == label and t - last[2] <= GAP_SECONDS:
            last[2] = end
        else:
            self.segments.append([label, t, end])
        self.last_s = max(self.last_s, end)
        self._bin(t, probabilities)

    def _bin(self, t: float, probabilities: np.ndarray) -> None:
        if self.bin_sums is None:
            self.bin_start = t
            self.bin_sums = np.zeros((MAX_BINS, len(self.classes)), np.float32)
            self.bin_counts = np.zeros(MAX_BINS, np.int32)
        k = int((t - self.bin_start) // self.bin_s)
        while k >= MAX_BINS:  # full: merge neighbouring bins, double the width
            self.bin_sums = np.concatenate([self.bin_sums.reshape(MAX_BINS // 2, 2, -1).sum(1),
                                            np.zeros((MAX_BINS // 2, len(self.classes)), np.float32)])
            self.bin_counts = np.concatenate([self.bin_counts.reshape(MAX_BINS // 2, 2).sum(1),
                                              np.zeros(MAX_BINS // 2, np.int32)])
            self.bin_s *= 2
            k = int((t - self.bin_start) // self.bin_s)
        self.bin_sums[k] += np.asarray(probabilities, np.float32)
        self.bin_counts[k] += 1

    def timeline(self) -> tuple[np.ndarray, np.ndarray]:
        """(times (B,), mean smoothed probabilities (B, C)) of the bins that hold frames."""
        if self.bin_sums is None:
            return np.zeros(0), np.zeros((0, len(self.classes)))
        used = np.flatnonzero(self.bin_counts)
        times = self.bin_start + (used + 0.5) * self.bin_s
        return times, self.bin_sums[used] / self.bin_counts[used, None]

    def to_dict(self, digits: int = 3) -> dict[str, Any]:
        """The person's summary record (``face_id, first_s, last_s, seconds, dominant, shares, segments``)."""
        shares = {k: v / self.seconds for k, v in self.label_seconds.items()} if self.seconds else {}
        ordered = sorted(shares.items(), key=lambda kv: -kv[1])
        return {"face_id": self.face_id, "first_s": round(self.first_s, digits), "last_s": round(self.last_s, digits),
                "seconds": round(self.seconds, digits), "dominant": ordered[0][0] if ordered else None,
                "shares": {k: round(v, digits) for k, v in ordered},
                "segments": [{"label": lab, "start_s": round(a, digits), "end_s": round(b, digits)}
                             for lab, a, b in self.segments]}


class PeopleSummary:
    """The people of one source (see the module docstring): feed :meth:`add`, read :meth:`to_dict`."""

    def __init__(self, source: str, classes: Sequence[str], fps: float | None = None, period: float = 0.04) -> None:
        self.source, self.classes, self.fps = source, tuple(classes), fps
        self.people: dict[int, Person] = {}
        self.duration_s = 0.0
        self.frames = 0
        self._bin_s = period

    def add_frame(self, t: float, period: float) -> None:
        """Count one analysed frame at ``t`` lasting ``period`` seconds (with or without faces)."""
        self.frames += 1
        self.duration_s = max(self.duration_s, t + period)

    def add(self, face_id: int, t: float, period: float, label: str, probabilities: np.ndarray) -> None:
        """One face of an analysed frame: person ``face_id`` at ``t`` with smoothed ``label`` and ``probabilities``."""
        person = self.people.get(face_id)
        if person is None:
            person = self.people[face_id] = Person(face_id, t, t, self.classes, self._bin_s)
        person.add(t, period, label, probabilities)

    def add_record(self, record: dict[str, Any], period: float) -> None:
        """Feed one ``pcnn predict`` JSON record of a video frame (``--resume`` rebuilds summaries this way)."""
        t = record.get("time_s")
        if t is None:
            return
        self.add_frame(t, period)
        for face in record.get("faces", []):
            if face.get("face_id") is None or not face.get("smooth_probabilities"):
                continue
            probs = np.array([face["smooth_probabilities"].get(c, 0.0) for c in self.classes])
            self.add(int(face["face_id"]), t, period, face["smooth_label"], probs)

    def to_dict(self, digits: int = 3) -> dict[str, Any]:
        """``{"source", "duration_s", "fps", "frames", "people": [...]}``, people by face id."""
        return {"source": self.source, "duration_s": round(self.duration_s, digits),
                "fps": None if self.fps is None else round(self.fps, digits), "frames": self.frames,
                "people": [self.people[k].to_dict(digits) for k in sorted(self.people)]}

    def line(self) -> str:
        """One console line: the people and their dominant expressions."""
        people = [p.to_dict() for p in sorted(self.people.values(), key=lambda p: p.face_id)]
        if not people:
            return f"{self.source}: no face found in {self.frames} frame(s)"
        shown = ", ".join(f"#{p['face_id']} {p['dominant']} {p['shares'][p['dominant']]:.0%} of "
                          f"{p['seconds']:.1f} s" for p in people[:12])
        more = f", and {len(people) - 12} more" if len(people) > 12 else ""
        return f"{self.source}: {len(people)} {'person' if len(people) == 1 else 'people'} ({shown}{more})"
