"""The one figure of ``pcnn robustness``: accuracy against strength for every corruption, in four panels (region by
region occlusion, other occluders, pose / misalignment, quality); strength 0 is the clean accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.pcnn import REGIONS

__all__ = ["PANELS", "plot_robustness"]

#: Panel title → predicate on (corruption name, group).
PANELS: tuple[tuple[str, Any], ...] = (
    ("occlusion of each PCNN region (solid: grey, dashed: noise)", lambda n, g: n.split(":")[0] in REGIONS),
    ("other occluders", lambda n, g: g == "occlusion" and n.split(":")[0] not in REGIONS),
    ("pose / misalignment", lambda n, g: g == "pose"),
    ("image quality", lambda n, g: g == "quality"),
)


def plot_robustness(path: str | Path, report: dict[str, Any], title: str = "") -> Path:
    """Write the figure of a ``robustness.json`` report to ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    clean = report["clean"]["accuracy"]
    corruptions = report["corruptions"]
    panels = [(t, [n for n, c in corruptions.items() if keep(n, c["group"])]) for t, keep in PANELS]
    panels = [(t, names) for t, names in panels if names]
    columns = min(2, max(1, len(panels)))
    rows = -(-max(1, len(panels)) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 3.9 * rows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    colours = plt.get_cmap("tab10").colors
    for ax, (panel_title, names) in zip(axes.flat, panels):
        for i, name in enumerate(names):
            results = sorted(corruptions[name]["results"], key=lambda r: r["strength"])
            xs = [r["strength"] for r in results]
            ys = [r["accuracy"] for r in results]
            if 0 not in xs:
                xs, ys = [0, *xs], [clean, *ys]
            base, _, fill = name.partition(":")
            colour = colours[REGIONS.index(base) if base in REGIONS else i % len(colours)]
            style = "--" if fill == "noise" else "-"
            label = base if base in REGIONS and fill == "grey" else (None if base in REGIONS else name)
            ax.plot(xs, ys, style, marker="o", markersize=3, color=colour, label=label)
        ax.axhline(clean, color="grey", linewidth=0.8, linestyle=":")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("strength (0 = clean)")
        ax.set_ylabel("accuracy (%)")
        ax.set_xticks(range(0, 4))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(f"{title}: clean {clean:.1f}%", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
