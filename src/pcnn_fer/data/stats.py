"""``pcnn data stats``: per-split class counts of a dataset, read from its label files (no image decoding).

:func:`dataset_stats` returns ``{"dataset": name, "root": root, "splits": {split: {class: count}}}``;
:func:`run_stats` runs ``pcnn data stats`` (its parser: :mod:`pcnn_fer.cli.data`).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from ..typed_fields import given_flag
from .datasets import get_dataset

__all__ = ["dataset_stats", "format_stats", "missing_images", "run_stats"]


def _collect(name: str, root: Path | str, mode: str | None, check_images: bool
             ) -> tuple[dict[str, Any], dict[str, tuple[int, int]]]:
    reader = get_dataset(name)
    splits: dict[str, dict[str, int]] = {}
    missing: dict[str, tuple[int, int]] = {}
    for s in reader.splits(root):
        sp = reader.load(root, s, mode)
        splits[s] = sp.counts()
        if check_images:
            missing[s] = (len(sp.missing_images()), len(sp))
    return {"dataset": reader.name, "root": str(root), "splits": splits}, missing


def dataset_stats(name: str, root: Path | str, mode: str | None = None) -> dict[str, Any]:
    """Class counts of every split of dataset ``name`` at ``root``: ``{"dataset", "root", "splits"}``.

    Counts come from label files / folder listings (RAF-DB: from the label list even when images are absent).
    Every class of the split's class order appears, zero counts included.
    """
    return _collect(name, root, mode, check_images=False)[0]


def missing_images(name: str, root: Path | str, mode: str | None = None) -> dict[str, tuple[int, int]]:
    """Per split, (missing image files, samples): lets a caller report label-only datasets honestly."""
    return _collect(name, root, mode, check_images=True)[1]


def format_stats(stats: dict[str, Any]) -> str:
    """A plain-text table (classes x splits, with totals) of a :func:`dataset_stats` result."""
    splits: dict[str, dict[str, int]] = stats["splits"]
    names = list(splits)
    classes: list[str] = []
    for counts in splits.values():
        classes.extend(c for c in counts if c not in classes)
    w0 = max([len("class"), len("total"), *map(len, classes)])
    widths = [max(len(s), 7) for s in names]
    lines = [f"{stats['dataset']} at {stats['root']}",
             "  ".join(["class".ljust(w0), *(s.rjust(w) for s, w in zip(names, widths, strict=True))])]
    for c in classes:
        lines.append("  ".join([c.ljust(w0), *(str(splits[s].get(c, 0)).rjust(w)
                                               for s, w in zip(names, widths, strict=True))]))
    lines.append("  ".join(["total".ljust(w0), *(str(sum(splits[s].values())).rjust(w)
                                                 for s, w in zip(names, widths, strict=True))]))
    return "\n".join(lines)


def run_stats(args: argparse.Namespace) -> int:
    """Run ``data stats``: print a table or JSON, return 0 (errors are raised for ``pcnn``'s one printer)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        option = get_dataset(args.dataset).check_option(args.dataset_option, given_flag(args, "dataset_option"))
        stats, missing = _collect(args.dataset, args.root, option, check_images=True)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps(stats, indent=2))
    else:
        print(format_stats(stats))
    reader = get_dataset(args.dataset)
    if reader.name != "folder":  # a fixed layout: say which of its splits are absent (e.g. FER2013Train/label.csv)
        for s in dict.fromkeys(x for x in (reader.train_split, reader.val_split, reader.test_split) if x):
            if s not in stats["splits"]:
                print(f"note: {reader.name}: no {s!r} split under {args.root} (its label file or folder is missing)",
                      file=sys.stderr)
    for s, (miss, n) in missing.items():
        if miss:
            what = "all" if miss == n else f"{miss} of"
            print(f"note: {stats['dataset']}/{s}: {what} {n} image files are missing (counts come from the labels; "
                  f"training/evaluation will skip them)", file=sys.stderr)
    return 0
