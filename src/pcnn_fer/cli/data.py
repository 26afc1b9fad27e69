"""``pcnn data stats``: its parser (the work is in :mod:`pcnn_fer.data.stats`)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import LazyHandler, add_dataset_flags, add_dataset_option_flags

__all__ = ["add_data_parser", "add_stats_parser"]


def add_stats_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``stats`` subcommand (``--dataset --root [--label-rule|--image-variant|--classes] [--json]``)
    on ``subparsers``."""
    p = subparsers.add_parser("stats", help="class counts per split of a dataset (from its label files)",
                              description="Print per-split class counts of a dataset read in its native layout.")
    add_dataset_flags(p)
    add_dataset_option_flags(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=LazyHandler("pcnn_fer.data.stats", "run_stats"))
    return p


def add_data_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``data`` command with its ``stats`` subcommand on the CLI's ``subparsers``."""
    p = subparsers.add_parser("data", help="dataset tools", description="Dataset tools.")
    sub = p.add_subparsers(dest="data_command", metavar="{stats}")
    sub.required = True
    add_stats_parser(sub)
    return p
