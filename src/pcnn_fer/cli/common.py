"""What the verb parsers of :mod:`pcnn_fer.cli` share: handlers that import the library when run, argument types,
and the names shown in help texts (kept equal to the library's registries by ``tests/test_cli_layer.py``).

Nothing here imports torch, numpy or the library modules that do the work (the engine's option dataclasses
import neither).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from importlib import import_module
from typing import Any

from ..engine.options import TrainOptions
from ..typed_fields import add_flags

__all__ = ["BASELINE_SUFFIXES", "BUNDLED_MODEL_NAMES", "DATASET_NAMES", "FIXED_WIDTH_PRESET_NAMES",
           "MODEL_PRESET_NAMES", "LazyHandler", "add_align_flag",
           "add_checkpoint_flag", "add_dataset_flags", "add_dataset_option_flags", "int_arg", "positive_int"]

#: The dataset readers of :data:`pcnn_fer.data.datasets.DATASETS`.
DATASET_NAMES = ("fer2013", "ferplus", "rafdb", "ckplus", "jaffe", "affectnet", "folder")
#: The PCNN presets of :data:`pcnn_fer.models.pcnn.MODEL_PRESETS`; each also has ablation baselines named
#: ``PRESET-SUFFIX`` (:mod:`pcnn_fer.models.baselines`).
MODEL_PRESET_NAMES = ("paper", "paper-v1", "compact", "small", "tiny", "dlib", "sface", "faceres")
BASELINE_SUFFIXES = ("resnet", "global", "nomdim", "resnet-wide")
#: Presets whose trunk widths are fixed by their pretrained weights: no ``resnet-wide`` baseline.
FIXED_WIDTH_PRESET_NAMES = ("dlib", "sface", "faceres")
#: The models shipped in the package (:data:`pcnn_fer.weights.BUNDLED_MODELS`).
BUNDLED_MODEL_NAMES = ("default", "ferplus", "fer2013")


def add_dataset_flags(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """``--dataset`` and ``--root``, with the same help on every verb (``required=False``: the verb checks them)."""
    parser.add_argument("--dataset", required=required, help=f"dataset name ({', '.join(DATASET_NAMES)})")
    parser.add_argument("--root", required=required, help="dataset root folder (or the csv file for fer2013)")


def add_checkpoint_flag(parser: argparse.ArgumentParser, onnx: bool = False) -> None:
    """``--checkpoint`` (default: the bundled FERPlus model), with the same help on every verb."""
    parser.add_argument("--checkpoint", default="default",
                        help=f"model: a bundled one ({', '.join(BUNDLED_MODEL_NAMES)}), a run folder, a .safetensors "
                             "file or an official PCNN .pth" + (", or (onnx backend) an exported .onnx file" if onnx
                                                                 else "") + " (default: default)")


class LazyHandler:
    """A verb's handler ``module:function``, imported when the verb runs (so that building the parser, and
    ``--help``, import nothing heavy). Called with the parsed Namespace, returns the exit code."""

    def __init__(self, module: str, function: str) -> None:
        self.module, self.function = module, function

    def __call__(self, args: argparse.Namespace) -> int:
        """Import the handler and run it."""
        handler: Callable[[argparse.Namespace], Any] = getattr(import_module(self.module), self.function)
        return int(handler(args) or 0)

    def __repr__(self) -> str:
        return f"LazyHandler({self.module}:{self.function})"


def int_arg(text: str) -> int:
    """An integer argument (argparse reports anything else as ``expected an integer``)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text}") from None


def positive_int(text: str) -> int:
    """An integer argument of at least 1."""
    value = int_arg(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def probability(text: str) -> float:
    """A number between 0 and 1 (``--min-confidence``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a probability between 0 and 1, got {text}")
    return value


def add_align_flag(p: Any) -> None:
    """Add ``--align-faces / --no-align-faces`` (default None: the dataset's own default) to a parser or group."""
    add_flags(p, TrainOptions, overrides=False, only=("align_faces",))


def add_dataset_option_flags(p: Any) -> None:
    """Add the dataset's option, ``--label-rule`` (FERPlus) / ``--image-variant`` (RAF-DB) / ``--classes``
    (AffectNet), old spelling ``--mode``, to a parser or group (dest ``dataset_option``; default: the dataset's)."""
    add_flags(p, TrainOptions, overrides=False, only=("dataset_option",))
