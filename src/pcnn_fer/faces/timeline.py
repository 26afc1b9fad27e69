"""Timeline picture of one source (``OUT/<video stem>_timeline.png``): one row per person, their smoothed expression
probabilities over the video's time as lines in the class colours of the annotated frames, and above them a band of
the smoothed label's segments, so that "who showed what, when" reads at a glance. Rows are ordered by face id; at
most :data:`MAX_ROWS` people (the longest seen) are drawn."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .draw import class_color
from .people import GAP_SECONDS, PeopleSummary

__all__ = ["plot_timeline", "MAX_ROWS"]

#: People drawn at most (those seen longest; the title says how many were left out).
MAX_ROWS = 12


def _rgb(name: str) -> tuple[float, float, float]:
    r, g, b = class_color(name)
    return r / 255, g / 255, b / 255


def _broken_at_gaps(times: np.ndarray, probs: np.ndarray, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """The series with a NaN row inserted wherever the person was unseen for more than ``gap`` seconds (the lines
    break there instead of joining across the absence)."""
    cuts = np.flatnonzero(np.diff(times) > gap) + 1
    if not len(cuts):
        return times, probs
    times = np.insert(times, cuts, np.nan)
    probs = np.insert(probs, cuts, np.nan, axis=0)
    return times, probs


def plot_timeline(summary: PeopleSummary, path: str | Path) -> Path:
    """Draw ``summary``'s people to ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    people = sorted(summary.people.values(), key=lambda p: -p.seconds)[:MAX_ROWS]
    people.sort(key=lambda p: p.face_id)
    rows = max(1, len(people))
    duration = max(summary.duration_s, 1e-3)
    fig, axes = plt.subplots(rows, 1, figsize=(11, 1.2 + 1.9 * rows), sharex=True, squeeze=False)
    left_out = len(summary.people) - len(people)
    count = len(summary.people)
    title = f"{Path(summary.source).name}: {count} {'person' if count == 1 else 'people'}" if count else \
        f"{Path(summary.source).name}: no face found"
    fig.suptitle(title + (f" ({left_out} seen briefly not drawn)" if left_out else ""), fontsize=12)
    seen_labels: list[str] = []
    for ax, person in zip(axes[:, 0], people or [None], strict=False):
        ax.set_xlim(0, duration)
        ax.set_ylim(0, 1.18)
        ax.set_yticks([0, 0.5, 1])
        ax.grid(axis="x", alpha=0.3)
        if person is None:
            ax.text(0.5, 0.5, "no face found", ha="center", va="center", transform=ax.transAxes)
            continue
        record = person.to_dict()
        times, probs = _broken_at_gaps(*person.timeline(), max(GAP_SECONDS, 1.5 * person.bin_s))
        for k, name in enumerate(summary.classes):
            if probs.size and np.nanmax(probs[:, k]) >= 0.1:  # classes that never reach 10 % would only add clutter
                ax.plot(times, probs[:, k], color=_rgb(name), lw=1.6)
        for seg in record["segments"]:
            ax.axvspan(seg["start_s"], seg["end_s"], ymin=1.03 / 1.18, ymax=1.0, color=_rgb(seg["label"]), lw=0)
            if seg["label"] not in seen_labels:
                seen_labels.append(seg["label"])
        share = record["shares"].get(record["dominant"], 0.0)
        ax.set_ylabel(f"#{person.face_id}", rotation=0, ha="right", va="center", fontsize=12, fontweight="bold")
        ax.set_title(f"person #{person.face_id}: {record['dominant']} {share:.0%} of {record['seconds']:.1f} s "
                     f"(seen {record['first_s']:.1f}-{record['last_s']:.1f} s)", fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("time in the video (s)")
    shown = [c for c in summary.classes if c in seen_labels] + [c for c in summary.classes if c not in seen_labels]
    fig.legend(handles=[Patch(color=_rgb(c), label=c) for c in shown], loc="lower center", ncol=len(shown),
               fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
