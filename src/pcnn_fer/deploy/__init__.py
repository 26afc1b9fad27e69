"""Deployment: the REST API with its web page (:mod:`.server`, ``pcnn serve``), its decode-memory budget
(:mod:`.memory`) and upload guard (:mod:`.body_guard`). The classifier backends and the ONNX export it serves with
live in :mod:`pcnn_fer.backends`.
"""

from __future__ import annotations

from ..defaults import DEFAULT_MAX_UPLOAD_MB

__all__ = ["DEFAULT_MAX_UPLOAD_MB"]
