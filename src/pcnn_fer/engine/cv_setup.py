"""What defines the folds of a ``pcnn cv`` output folder, recorded in ``OUT/cv-setup.json`` and checked before a
re-run reuses any fold: protocol, fold count, seed, the images (count and a digest of their names), dataset, root,
label rule, recipe (model included), initial weights and validation carving. A re-run that differs in any of them is
refused with one line naming the differences, instead of mixing folds of two set-ups in one ``cv.json``.

Not part of the set-up: device, threads, workers, precision and caching (they change speed, not the folds), and the
evaluation (``--tta``, ``--members``), which :mod:`pcnn_fer.engine.cv` redoes on the saved models when it changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..data.datasets import Split
from ..errors import UsageError
from .logs import write_json
from .options import TrainOptions
from .recipes import Recipe

__all__ = ["SETUP_FILE", "check_fold_setup", "fold_setup", "record_fold_setup"]

SETUP_FILE = "cv-setup.json"
#: Recipe fields that only change the evaluation of trained folds (re-done when they change), not the folds.
_EVALUATION_FIELDS = ("name", "description", "cv_tta", "cv_members")
#: Run options that define what a fold trains on and from.
_FOLD_OPTIONS = ("dataset", "dataset_option", "seed", "init", "init_resnet", "init_widen", "val_fraction",
                 "max_train_samples", "balanced", "align_faces")


def fold_setup(recipe: Recipe, opts: TrainOptions, protocol: str, folds: int, use_val: bool,
               split: Split | None = None) -> dict[str, Any]:
    """The set-up that defines a cv run's folds (``folds``: how many the protocol made)."""
    setup: dict[str, Any] = {"protocol": protocol, "folds": folds, "root": str(Path(opts.root).resolve()),
                             **{k: getattr(opts, k) for k in _FOLD_OPTIONS}, "use_val": use_val,
                             "recipe": {k: v for k, v in recipe.to_dict().items() if k not in _EVALUATION_FIELDS}}
    if split is not None:
        names = "\n".join(sorted(str(p) for p in split.paths)).encode("utf-8", "surrogateescape")
        setup["images"] = {"count": len(split), "sha1_of_names": hashlib.sha1(names).hexdigest()}
    return json.loads(json.dumps(setup))  # as it reads back from the file (tuples as lists)


def _from_summary(out: Path) -> dict[str, Any] | None:
    """The set-up of a folder written before ``cv-setup.json`` existed, rebuilt from its ``cv.json`` (no image
    digest there); None without one."""
    path = out / "cv.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
        return fold_setup(Recipe.from_dict(summary["recipe"]), TrainOptions.from_dict(summary["options"]),
                          summary["protocol"], summary["folds"], summary.get("selection") != "last epoch")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise UsageError(f"{path}: cannot tell which set-up its folds were made with ({e}); use another --out") \
            from None


def _differences(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    found = []
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b and not (prefix == "" and key == "images" and a is None):
            found.append(f"{prefix}{key} was {a!r}, now {b!r}")
    return found


def check_fold_setup(out: Path, setup: dict[str, Any]) -> None:
    """Refuse to reuse ``out`` when its folds were made with another set-up (one line naming the differences)."""
    path = out / SETUP_FILE
    if path.is_file():
        try:
            old = json.loads(path.read_text())
        except ValueError as e:
            raise UsageError(f"{path}: malformed JSON ({e}); use another --out") from None
    else:
        old = _from_summary(out)
        if old is None and any(out.glob("fold*/*")):
            raise UsageError(f"{out} holds folds without a record of their set-up ({SETUP_FILE}): they cannot be "
                             "checked against this run; use another --out")
    if old is not None:
        differences = _differences(old if "images" in old else {**old, "images": None}, setup)
        if differences:
            raise UsageError(f"{out} holds folds of another set-up ({'; '.join(differences[:6])}"
                             f"{'; …' if len(differences) > 6 else ''}): use another --out, or repeat that set-up")


def record_fold_setup(out: Path, setup: dict[str, Any]) -> None:
    """Write ``OUT/cv-setup.json`` (before the first fold trains)."""
    write_json(out / SETUP_FILE, setup)
