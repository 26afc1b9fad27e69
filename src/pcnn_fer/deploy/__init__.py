"""Deployment: classifier backends by name (:mod:`.backends`: ``auto``, ``torch`` in :mod:`.torch_backend`,
``onnx`` in :mod:`.onnx_backend`), ONNX export (:mod:`.onnx_export`, ``pcnn export``) and the REST API with its
web page (:mod:`.server`, ``pcnn serve``).

Importing this package imports none of them: the names below are loaded on first use, and torch, onnx,
onnxruntime and FastAPI only when a backend, an export or the server is used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

#: Default upload limit of ``pcnn serve`` (MB).
DEFAULT_MAX_UPLOAD_MB = 10.0

#: Public name → the submodule defining it.
_LAZY = {
    "BACKEND_NAMES": "backends", "ClassifierBackend": "backends", "create_backend": "backends",
    "describe_backend": "backends", "TorchClassifier": "torch_backend", "OnnxClassifier": "onnx_backend",
    "export_onnx": "onnx_export", "check_parity": "onnx_export", "read_metadata": "onnx_export",
    "ExportResult": "onnx_export", "ExportError": "onnx_export", "OUTPUT_NAMES": "onnx_export",
}


def __getattr__(name: str) -> Any:
    """Load a public name from its submodule on first access (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f".{_LAZY[name]}", __name__), name)


__all__ = [*_LAZY, "DEFAULT_MAX_UPLOAD_MB"]
