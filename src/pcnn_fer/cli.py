"""The ``pcnn`` command: one verb per job (bench, data, train, evaluate, cv, predict, export, serve, robustness)."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .errors import PCNNError

#: (module, function) pairs; each function adds its verb to the sub-parser collection and sets ``func``, a callable
#: taking the parsed Namespace and returning an exit code.
COMMANDS: list[tuple[str, str]] = [
    ("pcnn_fer.bench", "add_parser"),
    ("pcnn_fer.data.stats", "add_data_parser"),
    ("pcnn_fer.faces.cli", "add_parser"),
    ("pcnn_fer.engine.cli", "add_parser"),
    ("pcnn_fer.deploy.cli", "add_parser"),
    ("pcnn_fer.robustness.cli", "add_parser"),
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered verb."""
    parser = argparse.ArgumentParser(prog="pcnn", description="PCNN facial expression recognition toolkit")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, function in COMMANDS:
        getattr(importlib.import_module(module), function)(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pcnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (PCNNError, OSError) as e:  # anything else is a bug: its traceback is what a report needs
        if os.environ.get("PCNN_DEBUG"):  # full traceback for bug reports
            raise
        message = describe_os_error(e) if isinstance(e, OSError) else str(e)
        print(f"pcnn {args.command}: error: {message}", file=sys.stderr)
        return 1


def describe_os_error(error: OSError) -> str:
    """One line naming the file(s) an OSError is about: ``PATH: Permission denied`` (``SRC -> DST: ...`` for a move)."""
    reason = error.strerror or str(error)
    if error.filename is None:
        return reason
    if error.filename2 is not None:
        return f"{error.filename} -> {error.filename2}: {reason}"
    return f"{error.filename}: {reason}"

if __name__ == "__main__":
    sys.exit(main())
