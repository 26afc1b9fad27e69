"""``pcnn export``: its parser and handler (the work is in :mod:`pcnn_fer.backends.onnx_export`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_OPSET, DEFAULT_TOLERANCE, MIN_OPSET
from .common import add_checkpoint_flag

__all__ = ["add_parser", "run_export"]


def add_parser(subparsers: Any) -> None:
    """Add the ``export`` verb to the ``pcnn`` sub-parsers."""
    p = subparsers.add_parser(
        "export", help="export a model to ONNX (weights and metadata in one file, parity-checked)",
        description="Export a PCNN to a single ONNX file (opset >= 18, weights embedded, classes / input size / "
                    "normalisation / crop fractions / full config in the metadata). The exported model is run with "
                    "onnxruntime and compared with PyTorch; the command fails when any logit differs by more than "
                    "the tolerance.")
    add_checkpoint_flag(p)
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


def run_export(args: argparse.Namespace) -> int:
    """Run ``pcnn export``; 0 when the export passed the parity check, 1 otherwise."""
    from ..backends.onnx_export import ExportError, export_onnx

    try:
        result = export_onnx(args.checkpoint, args.out, dynamic_batch=args.dynamic_batch, input_size=args.input_size,
                             opset=args.opset, optimize=not args.no_optimize, tolerance=args.tolerance)
    except ExportError as e:
        print(f"pcnn export: error: {e}", file=sys.stderr)
        return 1
    print(result.summary())
    print(f"parity OK: max |diff| {result.max_abs_diff:.2e} <= tolerance {args.tolerance:g}")
    return 0
