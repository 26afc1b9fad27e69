"""The two pictures of a model's confidences that ``pcnn evaluate`` writes: a reliability diagram (accuracy against
confidence per equal-width bin, with the expected calibration error) and a risk–coverage curve (accuracy of the
faces answered against the share of faces answered, most confident first)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .logs import _pyplot

__all__ = ["plot_reliability", "plot_risk_coverage"]


def plot_reliability(path: str | Path, bins: Sequence[dict[str, float]], ece: float, title: str = "") -> Path:
    """PNG of a reliability diagram from :func:`~pcnn_fer.engine.calibration_fit.reliability_bins` rows: bars of
    accuracy per confidence bin, the gap to the diagonal shaded, the share of faces per bin beneath."""
    plt = _pyplot()
    fig, (ax, share) = plt.subplots(2, 1, figsize=(5.2, 6.0), height_ratios=(3, 1), sharex=True)
    total = max(sum(b["count"] for b in bins), 1)
    for b in bins:
        width = b["hi"] - b["lo"]
        ax.bar(b["lo"], 100 * b["accuracy"], width=width, align="edge", color="#4c72b0", edgecolor="white")
        low, high = sorted((b["accuracy"], b["confidence"]))
        ax.bar(b["lo"], 100 * (high - low), bottom=100 * low, width=width, align="edge", color="#dd8452",
               alpha=0.45, edgecolor="none")
        share.bar(b["lo"], 100 * b["count"] / total, width=width, align="edge", color="#8c8c8c", edgecolor="white")
    ax.plot([0, 1], [0, 100], color="black", lw=1, ls="--", label="perfect calibration")
    ax.bar([0], [0], color="#dd8452", alpha=0.45, label="gap to mean confidence")
    ax.set_ylabel("accuracy in the bin (%)")
    ax.set_ylim(0, 100)
    ax.set_xlim(0, 1)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title((title + "\n" if title else "") + f"ECE {ece:.2f}% ({len(bins)} non-empty of 15 bins)", fontsize=10)
    share.set_xlabel("confidence")
    share.set_ylabel("faces (%)")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_risk_coverage(path: str | Path, curve: dict[str, Any], title: str = "") -> Path:
    """PNG of a risk–coverage curve from :func:`~pcnn_fer.engine.calibration_fit.risk_coverage`: accuracy of the
    answered faces against the share answered, with the 90 % point marked."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    points = curve["curve"]
    ax.plot([p[0] for p in points], [p[1] for p in points], color="#4c72b0", lw=2)
    if "90" in curve["at"]:
        ax.scatter([90], [curve["at"]["90"]], color="#c44e52", zorder=3,
                   label=f"90% answered: {curve['at']['90']:.2f}% correct")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_xlabel("faces answered, most confident first (%)")
    ax.set_ylabel("accuracy of the answered faces (%)")
    ax.set_xlim(0, 100)
    low = min([p[1] for p in points] + [100.0])
    ax.set_ylim(max(0.0, low - 3), 100.5)
    ax.grid(alpha=0.3)
    ax.set_title((title + "\n" if title else "") + f"area under the risk curve {curve['aurc']:.2f}%", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
