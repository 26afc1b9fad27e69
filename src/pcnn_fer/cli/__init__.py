"""The ``pcnn`` command: one verb per job (bench, data, predict, train, evaluate, calibrate, occlusion, cv, export,
serve, robustness).

Each verb's parser is in its own module of this package (:mod:`.bench`, :mod:`.data`, ...); a verb's handler imports
the library modules that do the work only when it runs, so ``pcnn --help`` and every ``pcnn VERB --help`` import no
torch. :func:`main` is the one printer of expected errors (:class:`~pcnn_fer.errors.PCNNError`, :class:`OSError`):
one line, exit code 1 (docs/bad-input.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from ..errors import PCNNError

#: (module, function) pairs; each function adds its verb to the sub-parser collection and sets ``func``, a callable
#: taking the parsed Namespace and returning an exit code.
COMMANDS: list[tuple[str, str]] = [
    ("pcnn_fer.cli.predict", "add_parser"),
    ("pcnn_fer.cli.train", "add_parser"),
    ("pcnn_fer.cli.evaluate", "add_parser"),
    ("pcnn_fer.cli.calibrate", "add_parser"),
    ("pcnn_fer.cli.occlusion", "add_parser"),
    ("pcnn_fer.cli.cv", "add_parser"),
    ("pcnn_fer.cli.robustness", "add_parser"),
    ("pcnn_fer.cli.data", "add_data_parser"),
    ("pcnn_fer.cli.export", "add_parser"),
    ("pcnn_fer.cli.serve", "add_parser"),
    ("pcnn_fer.cli.bench", "add_parser"),
]


class PcnnArgumentParser(argparse.ArgumentParser):
    """argparse with pcnn's convention for bad input (docs/bad-input.md): a wrong option value, a missing argument
    or an unknown choice is one line, ``pcnn VERB: error: MESSAGE``, and exit code 1, as every error the verbs
    raise (argparse's own: the usage text and exit code 2). Verb parsers inherit it."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print one line naming the problem and exit with code 1."""
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every registered verb."""
    parser = PcnnArgumentParser(prog="pcnn", description="PCNN facial expression recognition toolkit")
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
        from .. import __version__

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


__all__ = ["COMMANDS", "PcnnArgumentParser", "build_parser", "describe_os_error", "main"]
