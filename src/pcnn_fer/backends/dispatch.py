"""Classifier backends by name: the one factory behind ``Recognizer``, ``pcnn predict``, ``serve``, ``evaluate`` and
``bench``.

A backend implements :class:`ClassifierBackend`: ``config`` (the model's
:class:`~pcnn_fer.models.pcnn.PCNNConfig`: classes, input size, normalisation) and ``__call__(batch)`` taking an
already-normalised float32 NCHW batch and returning ``(probs (N, C), region_probs (N, 5, C))``.

Names (:data:`BACKEND_NAMES`), resolved when asked for (nothing is registered or imported ahead):

* ``auto`` – ``onnx`` on the CPU when onnxruntime is installed and the model exports (the export is cached), else
  ``torch``; the backend's ``note`` says what was chosen and why;
* ``torch`` – :class:`~pcnn_fer.backends.torch_backend.TorchClassifier`;
* ``onnx`` – :class:`~pcnn_fer.backends.onnx_backend.OnnxClassifier`.

Any object with ``config`` and ``__call__`` may be passed instead of a name and is returned as is.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import PCNNError, UsageError

if TYPE_CHECKING:  # this module is imported by the pcnn parsers: no numpy, no torch at import time
    import numpy as np

    from ..models.pcnn import PCNNConfig

#: The names ``create_backend`` (and every ``--backend`` option) accepts.
BACKEND_NAMES: tuple[str, ...] = ("auto", "torch", "onnx")

log = logging.getLogger("pcnn_fer.backends")


class BackendUnavailable(PCNNError, RuntimeError):
    """The requested backend's package is not installed (or cannot be imported)."""


@runtime_checkable
class ClassifierBackend(Protocol):
    """A classifier for aligned, normalised face batches."""

    config: PCNNConfig

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``batch`` float32 (N, 3, S, S), already normalised → ``(probs (N, C), region_probs (N, 5, C))``."""
        ...


def onnxruntime_missing() -> str | None:
    """Why onnxruntime cannot be used here (a short reason), or None when it imports."""
    try:
        import onnxruntime  # noqa: F401
    except ModuleNotFoundError:
        return "onnxruntime is not installed"
    except ImportError as e:
        return f"onnxruntime cannot be imported ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
    return None


def _training_checkpoint_hint(checkpoint: Any) -> UsageError | None:
    """A clear error for a training checkpoint (``RUN/last.pt``) given where a model is expected, else None."""
    if not isinstance(checkpoint, (str, Path)):
        return None
    path = Path(checkpoint)
    if path.suffix != ".pt" or not path.is_file():
        return None
    run = path.parent
    if (run / "model.safetensors").is_file():
        return UsageError(f"{path} is a training checkpoint: pass the run folder {run} instead (its "
                          "model.safetensors is the selected model)")
    if path.name == "last.pt":
        return UsageError(f"{path} is a training checkpoint and {run} holds no model.safetensors yet: resume the "
                          f"run (pcnn train --resume {run}) or evaluate the checkpoint (pcnn evaluate --checkpoint "
                          f"{path})")
    return None


def _build(name: str, checkpoint: Any, device: str, threads: int | None, spinning: bool | None,
           cache: str | Path | None) -> ClassifierBackend:
    """The named backend; a training checkpoint given as the model gets a clear :class:`UsageError`."""
    from ..weights import WeightsError

    try:
        if name == "torch":
            from .torch_backend import TorchClassifier

            if threads:
                import torch

                torch.set_num_threads(int(threads))
            return TorchClassifier(checkpoint, device)
        missing = onnxruntime_missing()
        if missing:
            raise BackendUnavailable(f"the onnx backend needs onnxruntime: {missing} (pip install onnxruntime, or "
                                     "use --backend torch)")
        from .onnx_backend import OnnxClassifier

        return OnnxClassifier(checkpoint, device, threads=threads, spinning=spinning, cache=cache)
    except WeightsError as e:
        hint = _training_checkpoint_hint(checkpoint)
        if hint is None:
            raise
        raise hint from e


def create_backend(name: str | ClassifierBackend = "auto", checkpoint: Any = "default", device: str = "cpu", *,
                   threads: int | None = None, spinning: bool | None = None,
                   cache: str | Path | None = None) -> ClassifierBackend:
    """A classifier backend from its name (see :data:`BACKEND_NAMES`), or a ready backend object returned as is.

    ``checkpoint``: ``"default"``, a ``.safetensors`` file, a run folder, an official PCNN checkpoint, a PCNN module
    or (onnx) an exported ``.onnx`` file; ``threads``: CPU threads (torch: ``torch.set_num_threads``; onnx: intra-op
    threads of the session); ``spinning``: onnxruntime's spinning workers (None: its default); ``cache``: where
    onnx exports are kept (default: the project's cache folder). The returned backend's ``note`` says which backend
    runs and, for ``auto``, why.
    """
    from ..weights import WeightsError

    if not isinstance(name, str):
        if not callable(name) or not hasattr(name, "config"):
            raise TypeError("a backend object needs a config attribute and __call__(batch)")
        return name
    if name not in BACKEND_NAMES:
        raise UsageError(f"unknown backend {name!r}; choose {', '.join(BACKEND_NAMES)}")
    chosen, reason = name, ""
    if name == "auto":
        missing = onnxruntime_missing()
        if str(device) != "cpu":
            chosen, reason = "torch", f"device {device}"
        elif missing:
            chosen, reason = "torch", missing
        else:
            chosen, reason = "onnx", "onnxruntime is installed"
    try:
        backend = _build(chosen, checkpoint, str(device), threads, spinning, cache)
    except (WeightsError, UsageError):
        raise  # the checkpoint itself is unusable: torch would fail alike
    except (ImportError, OSError, PCNNError, TypeError) as e:
        if name != "auto" or chosen != "onnx":
            raise
        chosen, reason = "torch", f"no onnx model: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
        backend = _build(chosen, checkpoint, str(device), threads, spinning, cache)
    note = chosen + (f" (auto: {reason})" if name == "auto" else "")
    try:
        backend.note = note  # type: ignore[attr-defined]
    except AttributeError:
        pass
    log.info("classifier backend: %s", note)
    return backend


def describe_backend(backend: Any) -> str:
    """One line about a backend: its ``note`` (name and why it was chosen), else its name or class."""
    return str(getattr(backend, "note", None) or getattr(backend, "name", None) or type(backend).__name__)


__all__ = ["BACKEND_NAMES", "BackendUnavailable", "ClassifierBackend", "create_backend", "describe_backend",
           "onnxruntime_missing"]
