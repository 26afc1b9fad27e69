"""Classifier backends: one dispatcher by name (:mod:`.dispatch`: ``auto``, ``torch`` in :mod:`.torch_backend`,
``onnx`` in :mod:`.onnx_backend`) and the ONNX graph they run (:mod:`.onnx_export`, ``pcnn export``).

Used alike by ``faces/``, ``engine/`` and the server in ``deploy/``; nothing here imports ``deploy/``. Importing
this package imports none of them: the names below load on first use, torch and onnxruntime only with a backend.
"""

from __future__ import annotations

from ..lazy import lazy_attributes

#: Public name → the submodule defining it.
_LAZY = {
    "BACKEND_NAMES": "dispatch", "ClassifierBackend": "dispatch", "create_backend": "dispatch",
    "describe_backend": "dispatch", "TorchClassifier": "torch_backend", "OnnxClassifier": "onnx_backend",
    "export_onnx": "onnx_export", "check_parity": "onnx_export", "read_metadata": "onnx_export",
    "ExportResult": "onnx_export", "ExportError": "onnx_export", "OUTPUT_NAMES": "onnx_export",
}

__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)

__all__ = list(_LAZY)
