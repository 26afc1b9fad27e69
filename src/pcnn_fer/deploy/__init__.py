"""Deployment: classifier backends by name (:mod:`.backends`: ``auto``, ``torch`` in :mod:`.torch_backend`,
``onnx`` in :mod:`.onnx_backend`), ONNX export (:mod:`.onnx_export`, ``pcnn export``) and the REST API with its
web page (:mod:`.server`, ``pcnn serve``).

Importing this package imports none of them: the names below are loaded on first use, and torch, onnx,
onnxruntime and FastAPI only when a backend, an export or the server is used.
"""

from __future__ import annotations

from ..defaults import DEFAULT_MAX_UPLOAD_MB
from ..lazy import lazy_attributes

#: Public name → the submodule defining it.
_LAZY = {
    "BACKEND_NAMES": "backends", "ClassifierBackend": "backends", "create_backend": "backends",
    "describe_backend": "backends", "TorchClassifier": "torch_backend", "OnnxClassifier": "onnx_backend",
    "export_onnx": "onnx_export", "check_parity": "onnx_export", "read_metadata": "onnx_export",
    "ExportResult": "onnx_export", "ExportError": "onnx_export", "OUTPUT_NAMES": "onnx_export",
}


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = [*_LAZY, "DEFAULT_MAX_UPLOAD_MB"]
