"""Confidence calibration stored with a model: ``calibrated logits = logits × scale + bias`` (per class).

Temperature scaling is ``scale = 1/T`` for every class and ``bias = 0``; vector scaling fits one scale and one bias
per class. A :class:`Calibration` lives in :class:`~pcnn_fer.models.pcnn.PCNNConfig` (``calibration``), so it
travels inside the ``.safetensors`` metadata, the JSON beside it and the ONNX metadata, and every backend applies it
to the global logits before the softmax (:func:`calibrate_logits`). Fitting is in
:mod:`pcnn_fer.engine.calibrate`.
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from ..errors import UsageError

__all__ = ["CALIBRATION_METHODS", "UNCERTAIN", "Calibration", "calibrate_logits", "check_min_confidence",
           "note_calibration"]

#: The label given instead of an expression when the (calibrated) confidence is below ``--min-confidence``.
UNCERTAIN = "uncertain"

log = logging.getLogger("pcnn_fer.calibration")
_NOTED: set[str] = set()

#: The calibration maps ``pcnn calibrate --method`` fits (``auto`` picks one of them on held-out folds).
CALIBRATION_METHODS: tuple[str, ...] = ("temperature", "vector")


@dataclass(frozen=True)
class Calibration:
    """A fitted calibration map of a model's global logits and where it was fitted."""

    method: str  # one of CALIBRATION_METHODS
    scale: tuple[float, ...]  # per class
    bias: tuple[float, ...]  # per class
    fitted_on: str = ""  # e.g. "ferplus/valid (majority)"
    num_samples: int = 0

    def __post_init__(self) -> None:
        if self.method not in CALIBRATION_METHODS:
            raise UsageError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}, "
                             f"got {self.method!r}")
        scale, bias = _floats("scale", self.scale), _floats("bias", self.bias)
        if len(scale) != len(bias) or not scale:
            raise UsageError(f"calibration scale and bias need one value per class, got {len(scale)} and {len(bias)}")
        if min(scale) <= 0:
            raise UsageError(f"calibration scales must be positive, got {list(scale)}")
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) or self.num_samples < 0:
            raise UsageError(f"calibration num_samples must be a count, got {self.num_samples!r}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "bias", bias)
        object.__setattr__(self, "fitted_on", str(self.fitted_on))

    @classmethod
    def temperature_scaling(cls, temperature: float, num_classes: int, fitted_on: str = "",
                            num_samples: int = 0) -> Calibration:
        """Temperature scaling: logits / ``temperature``."""
        return cls("temperature", (1.0 / temperature,) * num_classes, (0.0,) * num_classes, fitted_on, num_samples)

    @property
    def temperature(self) -> float | None:
        """The temperature of a temperature scaling (None for vector scaling)."""
        return 1.0 / self.scale[0] if self.method == "temperature" else None

    def describe(self) -> str:
        """One line: the method, its parameter and where it was fitted."""
        what = (f"temperature {self.temperature:.3f}" if self.method == "temperature" else
                f"vector scaling (scales {min(self.scale):.2f}…{max(self.scale):.2f})")
        return what + (f", fitted on {self.fitted_on} ({self.num_samples} faces)" if self.fitted_on else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Calibration:
        """Build from :meth:`to_dict` output (UsageError for anything else)."""
        if isinstance(data, Calibration):
            return data
        if not isinstance(data, Mapping):
            raise UsageError(f"a calibration must be a JSON object, got {type(data).__name__}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise UsageError(f"unknown calibration keys: {sorted(unknown)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise UsageError(f"bad calibration: {e}") from None


def _floats(name: str, values: Any) -> tuple[float, ...]:
    """``values`` as a tuple of finite floats (UsageError otherwise)."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise UsageError(f"calibration {name} must be a list of numbers, got {values!r}")
    out = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise UsageError(f"calibration {name} must hold finite numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


def calibrate_logits(logits: Any, calibration: Calibration | None) -> Any:
    """``logits`` (a torch tensor or numpy array, classes last) through ``calibration`` (unchanged when None)."""
    if calibration is None:
        return logits
    if len(calibration.scale) != logits.shape[-1]:
        raise UsageError(f"the calibration has {len(calibration.scale)} classes, the logits {logits.shape[-1]}")
    if isinstance(logits, np.ndarray):
        return (logits * np.asarray(calibration.scale, dtype=logits.dtype)
                + np.asarray(calibration.bias, dtype=logits.dtype))
    import torch

    scale = torch.tensor(calibration.scale, dtype=logits.dtype, device=logits.device)
    bias = torch.tensor(calibration.bias, dtype=logits.dtype, device=logits.device)
    return logits * scale + bias


def note_calibration(config: Any, source: Any) -> None:
    """Say once per model (a warning on the ``pcnn_fer.calibration`` logger) that a model has no calibration, so
    its confidences are the plain softmax (temperature 1)."""
    if getattr(config, "calibration", None) is not None:
        return
    name = source if isinstance(source, (str, bytes)) or hasattr(source, "__fspath__") else "this model"
    key = str(name)
    if key in _NOTED:
        return
    _NOTED.add(key)
    log.warning("%s carries no calibration: confidences are the plain softmax (temperature 1); pcnn calibrate "
                "fits one", key)


def check_min_confidence(value: Any) -> float | None:
    """``--min-confidence`` checked: None (never abstain) or a number in [0, 1] (UsageError otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise UsageError(f"min_confidence must be a probability between 0 and 1, got {value!r}")
    return float(value)
