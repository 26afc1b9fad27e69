"""``pcnn bench``: its parser (the work is in :mod:`pcnn_fer.bench`)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import BASELINE_SUFFIXES, FIXED_WIDTH_PRESET_NAMES, MODEL_PRESET_NAMES, LazyHandler, positive_int

__all__ = ["BUNDLED_PRESET", "add_parser"]

#: The architecture of the bundled models (pcnn_fer.weights.BUNDLED_MODELS; tests/test_model.py checks it).
BUNDLED_PRESET = "small"


def add_parser(subparsers: Any) -> None:
    """Add the ``bench`` verb to the ``pcnn`` sub-parsers."""
    p = subparsers.add_parser("bench", help="parameters, FLOPs, latency and throughput vs a ResNet-18")
    p.add_argument("--model", default=BUNDLED_PRESET, metavar="NAME",
                   help=f"model (architecture) preset: {', '.join(MODEL_PRESET_NAMES)}, or an ablation baseline "
                        f"NAME-SUFFIX "
                        f"(SUFFIX: {', '.join(BASELINE_SUFFIXES)}; no resnet-wide for "
                        f"{', '.join(FIXED_WIDTH_PRESET_NAMES)}); default {BUNDLED_PRESET}, the bundled model's "
                        "architecture at its 48 px (seconds); --model paper: the paper's 25.9 M-parameter PCNN at "
                        "224 px (minutes on a CPU)")
    p.add_argument("--preset", dest="model", help=argparse.SUPPRESS)  # deprecated spelling of --model
    p.add_argument("--input-size", type=int, default=None, help="input side (default: the model's)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="batch size for the throughput figure")
    p.add_argument("--device", default="cpu")
    p.add_argument("--rounds", type=positive_int, default=7, help="interleaved timing rounds (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-channels-last", action="store_true", help="time contiguous NCHW instead of channels_last")
    p.add_argument("--compile", action="store_true",
                   help="also time the optimised PCNN under torch.compile (inductor, frozen weights; slow to build)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="onnx: also time the PCNN exported to ONNX and run by onnxruntime, in the same run")
    p.set_defaults(func=LazyHandler("pcnn_fer.bench", "run_bench"))
