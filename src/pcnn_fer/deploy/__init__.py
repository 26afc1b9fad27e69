"""Deployment: ONNX export (:mod:`.onnx_export`, ``pcnn export``), the onnxruntime classifier backend
(:mod:`.onnx_backend`, registered as ``"onnx"`` for :class:`~pcnn_fer.faces.Recognizer` and ``pcnn predict``) and
the REST API with its web page (:mod:`.server`, ``pcnn serve``).

Importing this package registers the ``onnx`` backend; onnx, onnxruntime and FastAPI are imported only when used.
"""

from __future__ import annotations

from ..faces.recognizer import BACKENDS, register_backend
from .onnx_backend import OnnxClassifier
from .onnx_export import OUTPUT_NAMES, ExportError, ExportResult, check_parity, export_onnx, read_metadata

#: Default upload limit of ``pcnn serve`` (MB).
DEFAULT_MAX_UPLOAD_MB = 10.0

if "onnx" not in BACKENDS:
    register_backend("onnx", OnnxClassifier)

__all__ = ["OnnxClassifier", "export_onnx", "check_parity", "read_metadata", "ExportResult", "ExportError",
           "OUTPUT_NAMES", "DEFAULT_MAX_UPLOAD_MB"]
