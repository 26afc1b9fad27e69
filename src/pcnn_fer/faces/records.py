"""The shape of a ``pcnn predict`` JSON record (:meth:`Prediction.to_dict
<pcnn_fer.faces.recognizer.Prediction.to_dict>`), checked before ``--resume`` keeps a record it did not write in
this run: a record that is not one is refused instead of being kept as done or breaking the CSV later."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real
from typing import Any

__all__ = ["RecordError", "check_record", "check_record_classes"]


class RecordError(ValueError):
    """What is wrong with one record (the caller names the file and line)."""


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _probabilities(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and _number(v) for k, v in value.items())


def check_record(record: Any) -> None:
    """Raise :class:`RecordError` unless ``record`` has a record's fields: ``source`` (text), ``frame`` (None or
    an integer), ``skipped`` (None or text) and ``faces``, a list of faces each with a 4-number ``box``, a ``label``,
    a ``score``, a ``detection_score``, ``probabilities`` and per-region ``regions``."""
    if not isinstance(record, dict):
        raise RecordError("not a JSON object")
    missing = [k for k in ("source", "frame", "skipped", "faces") if k not in record]
    if missing:
        raise RecordError(f"no {', '.join(map(repr, missing))}")
    if not isinstance(record["source"], str):
        raise RecordError("'source' is not text")
    if record["frame"] is not None and not (isinstance(record["frame"], int) and not isinstance(record["frame"], bool)
                                            and record["frame"] >= 0):
        raise RecordError("'frame' is neither null nor a frame index")
    if record["skipped"] is not None and not isinstance(record["skipped"], str):
        raise RecordError("'skipped' is neither null nor a reason")
    if not isinstance(record["faces"], list):
        raise RecordError("'faces' is not a list")
    for i, face in enumerate(record["faces"]):
        if not isinstance(face, dict):
            raise RecordError(f"face {i} is not a JSON object")
        box = face.get("box")
        if not (isinstance(box, list) and len(box) == 4 and all(map(_number, box))):
            raise RecordError(f"face {i}: 'box' is not 4 numbers")
        if not isinstance(face.get("label"), str) or not _number(face.get("score")) \
                or not _number(face.get("detection_score")):
            raise RecordError(f"face {i}: 'label', 'score' or 'detection_score' missing or of the wrong type")
        regions = face.get("regions")
        if not _probabilities(face.get("probabilities")) or not isinstance(regions, dict) \
                or not all(_probabilities(p) for p in regions.values()):
            raise RecordError(f"face {i}: 'probabilities' or 'regions' missing or not numbers by class")


def check_record_classes(record: dict[str, Any], classes: Sequence[str], regions: Sequence[str]) -> None:
    """Raise :class:`RecordError` unless every face of ``record`` has probabilities over ``classes`` and every
    region in ``regions`` (the model this run uses)."""
    for i, face in enumerate(record["faces"]):
        found = sorted(face["probabilities"])
        if found != sorted(classes):
            raise RecordError(f"face {i} has probabilities of {found}, this model predicts {sorted(classes)}")
        if sorted(face["regions"]) != sorted(regions) or any(sorted(p) != sorted(classes)
                                                             for p in face["regions"].values()):
            raise RecordError(f"face {i}: its regions are not {list(regions)} over this model's classes")
