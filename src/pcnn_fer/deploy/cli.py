"""``pcnn export`` (PCNN → one ONNX file, checked against PyTorch) and ``pcnn serve`` (REST API + web page).

Importing this module (the ``pcnn`` command does) registers the ``onnx`` classifier backend, so that
``pcnn predict --backend onnx`` works.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..faces.imageio import MAX_PIXELS
from . import DEFAULT_MAX_UPLOAD_MB  # importing the package registers the "onnx" backend
from .body_guard import DEFAULT_READ_TIMEOUT
from .onnx_export import DEFAULT_OPSET, DEFAULT_TOLERANCE, MIN_OPSET


def add_parser(subparsers: Any) -> None:
    """Add the ``export`` and ``serve`` verbs to the ``pcnn`` sub-parsers (each sets ``func``)."""
    p = subparsers.add_parser(
        "export", help="export a model to ONNX (weights and metadata in one file, parity-checked)",
        description="Export a PCNN to a single ONNX file (opset >= 18, weights embedded, classes / input size / "
                    "normalisation / crop fractions / full config in the metadata). The exported model is run with "
                    "onnxruntime and compared with PyTorch; the command fails when any logit differs by more than "
                    "the tolerance.")
    p.add_argument("--checkpoint", default="default", help="'default' (bundled), a .safetensors file or a run folder")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    p.add_argument("--out", type=Path, required=True, help="output .onnx file")
    p.add_argument("--dynamic-batch", action="store_true", help="symbolic batch dimension (default: batch 1)")
    p.add_argument("--input-size", type=int, help="export for N×N inputs (default: the model's own input size)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (at least {MIN_OPSET})")
    p.add_argument("--no-optimize", action="store_true",
                   help="export the plain PCNN graph instead of the inference-optimised one (BN folded, paired trunks)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest accepted |onnxruntime - PyTorch| difference of any logit")
    p.set_defaults(func=run_export)

    s = subparsers.add_parser(
        "serve", help="REST API and web page for expression recognition (FastAPI + uvicorn)",
        description="Serve POST /predict (multipart image upload -> the predict JSON record), GET /health, the OpenAPI "
                    "docs at /docs and a web page at / (upload a photo or take a webcam snapshot).")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port; the URL printed says which)")
    s.add_argument("--checkpoint", default="default",
                   help="'default' (bundled), a .safetensors file, a run folder, or (with --backend onnx) a .onnx file")
    s.add_argument("--backend", default="torch", choices=["torch", "onnx"], help="classifier backend")
    s.add_argument("--device", default="cpu", help="cpu, or cuda[:N]")
    s.add_argument("--detector", default="auto", choices=["auto", "dlib", "cnn", "haar"], help="face detector")
    s.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="largest accepted upload")
    s.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help="refuse (413) images whose header declares more pixels than this, before decoding them")
    s.add_argument("--max-decodes", type=int,
                   help="images decoded and analysed at once (default: the CPU cores); each 64 MP image takes about "
                        "0.6 GB while it is decoded")
    s.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT,
                   help="seconds an upload may send nothing before it is answered 408 and closed")
    s.add_argument("--workers", type=int, default=2,
                   help="recognizers (face detectors) working in parallel; they share the one loaded model")
    s.add_argument("--threads", type=int, help="CPU threads of the classifier (torch / onnxruntime intra-op)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=run_serve)


def run_export(args: argparse.Namespace) -> int:
    """Run ``pcnn export``; 0 when the export passed the parity check, 1 otherwise."""
    from .onnx_export import ExportError, export_onnx

    try:
        result = export_onnx(args.checkpoint, args.out, dynamic_batch=args.dynamic_batch, input_size=args.input_size,
                             opset=args.opset, optimize=not args.no_optimize, tolerance=args.tolerance)
    except ExportError as e:
        print(f"pcnn export: error: {e}", file=sys.stderr)
        return 1
    print(result.summary())
    print(f"parity OK: max |diff| {result.max_abs_diff:.2e} <= tolerance {args.tolerance:g}")
    return 0


def check_serve_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range ``pcnn serve`` options with a :class:`~pcnn_fer.errors.UsageError` naming the option."""
    for option, value, low in (("--workers", args.workers, 1), ("--max-pixels", args.max_pixels, 1),
                               ("--max-decodes", args.max_decodes, 1), ("--threads", args.threads, 1)):
        if value is not None and value < low:
            raise UsageError(f"{option} must be at least {low}, got {value}")
    for option, value in (("--max-upload-mb", args.max_upload_mb), ("--read-timeout", args.read_timeout)):
        if not 0 < value < float("inf"):
            raise UsageError(f"{option} must be a positive number, got {value}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (0: any free port), got {args.port}")


def run_serve(args: argparse.Namespace) -> int:
    """Run ``pcnn serve`` until interrupted: check the options, bind the port (a busy one fails here, before the
    model is loaded), load the model, print the URL, serve."""
    from .server import bind_socket, create_app, is_loopback, run_on_socket, url_of

    check_serve_args(args)
    with bind_socket(args.host, args.port) as sock:
        if not is_loopback(args.host):
            print(f"warning: listening on {args.host}: the API has no authentication and is reachable from other "
                  "machines", file=sys.stderr)
        app = create_app(checkpoint=args.checkpoint, backend=args.backend, device=args.device,
                         detector=args.detector, max_upload_mb=args.max_upload_mb, workers=args.workers,
                         threads=args.threads, max_pixels=args.max_pixels, max_decodes=args.max_decodes,
                         read_timeout=args.read_timeout)
        print(f"pcnn serve: {app.state.service.backend_name} backend, {len(app.state.service.classes)} classes; "
              f"open {url_of(sock)}/ (API docs at /docs)", flush=True)
        run_on_socket(app, sock, args.log_level)
    return 0


__all__ = ["add_parser", "run_export", "run_serve", "check_serve_args"]
