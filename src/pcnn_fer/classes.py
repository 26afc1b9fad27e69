"""One canonical expression vocabulary and explicit per-dataset class orders.

Every dataset reader declares its classes as canonical names in the dataset's own label order; models store the
canonical names they were trained on. Cross-dataset evaluation maps classes by canonical name, never by index.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import UsageError

#: PCNN's five local regions, in the order of the official code's branches x2, x3, x4, x6, x7 (image left/right)
#: and of every output (defined here, away from torch, for the modules that only name them).
REGIONS: tuple[str, ...] = ("left_eye", "right_eye", "left_cheek", "right_cheek", "mouth")

#: The canonical expression names (FERPlus order, the superset of every supported dataset).
CANONICAL_CLASSES: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
)

#: Spellings found in dataset releases, mapped to canonical names.
ALIASES: dict[str, str] = {
    "neutral": "neutral",
    "ne": "neutral",
    "happy": "happiness",
    "happiness": "happiness",
    "ha": "happiness",
    "joy": "happiness",
    "surprise": "surprise",
    "surprised": "surprise",
    "su": "surprise",
    "sad": "sadness",
    "sadness": "sadness",
    "sa": "sadness",
    "angry": "anger",
    "anger": "anger",
    "an": "anger",
    "disgust": "disgust",
    "disgusted": "disgust",
    "di": "disgust",
    "fear": "fear",
    "fearful": "fear",
    "fe": "fear",
    "contempt": "contempt",
}

#: Class order of the official PCNN evaluation code (val.py); Contempt is appended for 8-class models.
OFFICIAL_PCNN_CLASSES: tuple[str, ...] = ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")


def canonical_name(name: str) -> str:
    """Return the canonical class name for a dataset's spelling of it, or raise UsageError (a ValueError)."""
    key = name.strip().lower()
    if key not in ALIASES:
        raise UsageError(f"unknown expression class {name!r}; known: {', '.join(CANONICAL_CLASSES)}")
    return ALIASES[key]


def official_pcnn_classes(num_classes: int) -> tuple[str, ...]:
    """Return the class order of an official PCNN checkpoint with 7 or 8 outputs."""
    if num_classes == 7:
        return OFFICIAL_PCNN_CLASSES
    if num_classes == 8:
        return (*OFFICIAL_PCNN_CLASSES, "contempt")
    raise UsageError(f"official PCNN checkpoints have 7 or 8 classes, this one has {num_classes}")


def class_mapping(source: Sequence[str], target: Sequence[str]) -> dict[int, int]:
    """Map indices of `source` classes to indices of `target` classes by canonical name (shared classes only)."""
    target_index = {canonical_name(c): i for i, c in enumerate(target)}
    mapping = {}
    for i, c in enumerate(source):
        j = target_index.get(canonical_name(c))
        if j is not None:
            mapping[i] = j
    if not mapping:
        raise UsageError(f"no shared classes between {list(source)} and {list(target)}")
    return mapping


def describe_mapping(source: Sequence[str], target: Sequence[str]) -> str:
    """Human-readable description of how `source` classes map onto `target` classes (printed, never silent)."""
    mapping = class_mapping(source, target)
    lines = [f"  {source[i]} -> {target[j]}" for i, j in mapping.items()]
    dropped = [source[i] for i in range(len(source)) if i not in mapping]
    if dropped:
        lines.append(f"  dropped (not in target): {', '.join(dropped)}")
    return "class mapping:\n" + "\n".join(lines)
