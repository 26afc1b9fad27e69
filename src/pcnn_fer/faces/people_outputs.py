"""The people files of ``pcnn predict --out DIR`` for videos, webcams and image sequences: ``DIR/summary.json`` and one
``DIR/<video stem>_timeline.png`` per video (named like the annotated video, below the folder argument).

``summary.json`` is ``{"sources": [{"source", "duration_s", "fps", "frames", "people": [{"face_id", "first_s",
"last_s", "seconds", "dominant", "shares", "segments": [{"label", "start_s", "end_s"}]}]}]}``
(:meth:`PeopleSummary.to_dict <pcnn_fer.faces.people.PeopleSummary.to_dict>`). It is rewritten (to a temporary file
put in place) after every video, so a job stopped in its third video keeps the first two; ``--resume`` rebuilds the
summaries of the videos it keeps from their JSONL records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fileio import publish, temporary_beside
from .outputs import relative_output_name
from .people import PeopleSummary
from .sources import Source
from .stream import MOVING_KINDS
from .timeline import plot_timeline

__all__ = ["PeopleFiles", "SUMMARY_NAME", "timeline_paths"]

SUMMARY_NAME = "summary.json"


def timeline_paths(sources: Sequence[Source], out: Path) -> dict[int, Path]:
    """``out/<relative name>_timeline.png`` per video, webcam or image-sequence source index (``_1``, ``_2``…
    added to repeats)."""
    paths: dict[int, Path] = {}
    used: set[Path] = set()
    for i, source in enumerate(sources):
        if source.kind not in MOVING_KINDS:
            continue
        base = relative_output_name(source).with_suffix("")
        candidate, n = out / base.with_name(base.name + "_timeline.png"), 1
        while candidate in used:
            candidate = out / base.with_name(f"{base.name}_timeline_{n}.png")
            n += 1
        used.add(candidate)
        paths[i] = candidate
    return paths


class PeopleFiles:
    """Writes ``summary.json`` and the timelines of one ``pcnn predict`` run (see the module docstring)."""

    def __init__(self, out: Path, sources: Sequence[Source], every: int = 1, timelines: bool = True) -> None:
        self.out, self.sources, self.every = out, list(sources), every
        self.timelines = timeline_paths(sources, out) if timelines else {}
        self.index = {id(s): i for i, s in enumerate(sources)}
        self.entries: list[dict[str, Any]] = []

    @property
    def wanted(self) -> bool:
        """True when some input is a video, webcam or image sequence."""
        return any(s.kind in MOVING_KINDS for s in self.sources)

    def planned(self) -> list[Path]:
        """Every path this run may write (checked against the inputs before any work)."""
        return [self.out / SUMMARY_NAME, *self.timelines.values()] if self.wanted else []

    def add_kept(self, records: Sequence[dict[str, Any]], classes: Sequence[str]) -> None:
        """Rebuild the summaries of the videos whose records ``--resume`` keeps."""
        by_source: dict[str, list[dict[str, Any]]] = {}
        for record in records:
            if record.get("time_s") is not None:
                by_source.setdefault(record["source"], []).append(record)
        for name, recs in by_source.items():
            times = np.array([r["time_s"] for r in recs], np.float64)
            steps = np.diff(times)
            period = float(np.median(steps[steps > 0])) if (steps > 0).any() else 0.04
            summary = PeopleSummary(name, classes, fps=None, period=period)
            for record in recs:
                summary.add_record(record, period)
            entry = summary.to_dict()
            entry["fps"] = round(self.every / period, 3)
            self.entries.append(entry)

    def end_source(self, source: Source, people: PeopleSummary | None) -> Path | None:
        """Record one finished video: its timeline PNG (returned) and the updated ``summary.json``."""
        if people is None:
            return None
        self.entries.append(people.to_dict())
        path = self.timelines.get(self.index.get(id(source), -1))
        if path is not None:
            plot_timeline(people, path)
        self._write()
        return path

    def _write(self) -> None:
        fd, tmp = temporary_beside(self.out / SUMMARY_NAME)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"sources": self.entries}, f, indent=1)
            f.write("\n")
        publish(tmp, self.out / SUMMARY_NAME)
