"""``pcnn serve``: its parser, option checks and handler (the work is in :mod:`pcnn_fer.deploy.server`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..backends.dispatch import BACKEND_NAMES
from ..defaults import DEFAULT_MAX_MEMORY_MB, DEFAULT_MAX_QUEUE, DEFAULT_MAX_UPLOAD_MB, DEFAULT_READ_TIMEOUT, MAX_PIXELS
from ..errors import UsageError
from .common import add_checkpoint_flag, probability

__all__ = ["add_parser", "check_serve_args", "run_serve"]


def add_parser(subparsers: Any) -> None:
    """Add the ``serve`` verb to the ``pcnn`` sub-parsers."""
    s = subparsers.add_parser(
        "serve", help="REST API and web page for expression recognition (FastAPI + uvicorn)",
        description="Serve POST /predict (multipart image upload -> the predict JSON record), GET /health, the OpenAPI "
                    "docs at /docs and a web page at / (upload a photo or take a webcam snapshot).")
    s.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: loopback only)")
    s.add_argument("--port", type=int, default=8000, help="TCP port (0: any free port; the URL printed says which)")
    add_checkpoint_flag(s, onnx=True)
    s.add_argument("--backend", default="auto", choices=BACKEND_NAMES,
                   help="classifier backend: auto (onnxruntime when installed, else torch; default), torch or onnx")
    s.add_argument("--device", default="cpu", help="cpu, or cuda[:N]")
    s.add_argument("--detector", default="auto", choices=["auto", "yunet", "dlib-auto", "dlib", "cnn", "haar"],
                   help="face detector (auto: YuNet; see pcnn predict --help)")
    s.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB, help="largest accepted upload")
    s.add_argument("--max-pixels", type=int, default=MAX_PIXELS,
                   help="refuse (413) images whose header declares more pixels than this, before decoding them")
    s.add_argument("--max-decodes", type=int,
                   help="at most this many images decoded and analysed at once (default: the CPU cores)")
    s.add_argument("--max-memory-mb", type=float, default=DEFAULT_MAX_MEMORY_MB,
                   help="memory budget in MiB: the server's own memory plus the peaks of the images it decodes at "
                        "once (estimated from their headers; a 64 MP RGB image about 0.7 GB) stay under it; the "
                        f"others wait (default {DEFAULT_MAX_MEMORY_MB:g}; 0: only --max-decodes bounds them)")
    s.add_argument("--max-queue", type=int, default=DEFAULT_MAX_QUEUE,
                   help=f"uploads that may wait for a decode; beyond them 503 with Retry-After "
                        f"(default {DEFAULT_MAX_QUEUE})")
    s.add_argument("--read-timeout", type=float, default=DEFAULT_READ_TIMEOUT,
                   help="seconds an upload may send nothing before it is answered 408 and closed")
    s.add_argument("--workers", type=int, default=2,
                   help="recognizers (face detectors) working in parallel; they share the one loaded model")
    s.add_argument("--threads", type=int, help="CPU threads of the classifier (torch / onnxruntime intra-op)")
    s.add_argument("--min-confidence", type=probability, metavar="P",
                   help="label faces whose (calibrated) confidence is below P 'uncertain' (a request may name its own "
                        "min_confidence); the probabilities stay in the answer")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=run_serve)


def check_serve_args(args: argparse.Namespace) -> None:
    """Refuse out-of-range ``pcnn serve`` options with a :class:`~pcnn_fer.errors.UsageError` naming the option."""
    for option, value, low in (("--workers", args.workers, 1), ("--max-pixels", args.max_pixels, 1),
                               ("--max-decodes", args.max_decodes, 1), ("--threads", args.threads, 1),
                               ("--max-queue", args.max_queue, 0)):
        if value is not None and value < low:
            raise UsageError(f"{option} must be at least {low}, got {value}")
    for option, value in (("--max-upload-mb", args.max_upload_mb), ("--read-timeout", args.read_timeout)):
        if not 0 < value < float("inf"):
            raise UsageError(f"{option} must be a positive number, got {value}")
    if not 0 <= args.max_memory_mb < float("inf"):
        raise UsageError(f"--max-memory-mb must be a non-negative number of MiB (0: no bound), got "
                         f"{args.max_memory_mb}")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port must be between 0 and 65535 (0: any free port), got {args.port}")


def run_serve(args: argparse.Namespace) -> int:
    """Run ``pcnn serve`` until interrupted: check the options, bind the port (a busy one fails here, before the
    model is loaded), load the model, print the URL, serve."""
    from ..deploy.server import bind_socket, create_app, is_loopback, run_on_socket, url_of

    check_serve_args(args)
    with bind_socket(args.host, args.port) as sock:
        if not is_loopback(args.host):
            print(f"warning: listening on {args.host}: the API has no authentication and is reachable from other "
                  "machines", file=sys.stderr)
        app = create_app(checkpoint=args.checkpoint, backend=args.backend, device=args.device,
                         detector=args.detector, max_upload_mb=args.max_upload_mb, workers=args.workers,
                         threads=args.threads, max_pixels=args.max_pixels, max_decodes=args.max_decodes,
                         max_memory_mb=args.max_memory_mb, max_queue=args.max_queue, read_timeout=args.read_timeout,
                         min_confidence=args.min_confidence)
        service = app.state.service
        print(f"pcnn serve: backend {service.backend_note}, {len(service.classes)} classes; "
              f"open {url_of(sock)}/ (API docs at /docs)", flush=True)
        run_on_socket(app, sock, args.log_level)
    return 0
