"""Default values of user-facing options that both the library and the ``pcnn`` parsers (:mod:`pcnn_fer.cli`) use.

This module imports nothing, so a parser can show these defaults without loading the modules that use them.
"""

#: Default limit on width × height of a decoded image (about a 9000×6000 photo is 54 MP); larger images are
#: skipped (``pcnn predict``) or refused with 413 (``pcnn serve``), never decoded.
MAX_PIXELS = 64_000_000

#: Default upload limit of ``pcnn serve`` (MB).
DEFAULT_MAX_UPLOAD_MB = 10.0

#: Default memory budget of ``pcnn serve`` (MiB): its resident memory plus the estimated peaks of the images it
#: decodes at once stay under this (:class:`pcnn_fer.deploy.memory.DecodeBudget`).
DEFAULT_MAX_MEMORY_MB = 1800.0

#: Default number of uploads ``pcnn serve`` keeps waiting for a decode before it answers 503 with Retry-After.
DEFAULT_MAX_QUEUE = 64

#: Default seconds a request body may go without receiving any bytes before ``pcnn serve`` answers 408.
DEFAULT_READ_TIMEOUT = 30.0

#: ONNX opsets of ``pcnn export``: the lowest that has GridSample / affine_grid (the STN), and the default.
MIN_OPSET = 18
DEFAULT_OPSET = 18

#: Largest accepted |onnxruntime - PyTorch| difference of any logit in the export parity check.
DEFAULT_TOLERANCE = 1e-4

#: Default time constant (seconds) of the per-person expression smoothing in videos (``pcnn predict --smooth``;
#: docs/faces.md, "People in videos").
SMOOTH_SECONDS = 0.5

#: Default memory (seconds) for re-identifying a person who left a video (``pcnn predict --reid-seconds``).
REID_SECONDS = 30.0

__all__ = ["SMOOTH_SECONDS", "REID_SECONDS", "DEFAULT_MAX_MEMORY_MB", "DEFAULT_MAX_QUEUE", "DEFAULT_MAX_UPLOAD_MB",
           "DEFAULT_OPSET", "DEFAULT_READ_TIMEOUT", "DEFAULT_TOLERANCE", "MAX_PIXELS", "MIN_OPSET"]
