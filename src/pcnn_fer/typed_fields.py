"""Typed dataclass fields as the one source of truth for configs: checked values and generated command-line flags.

A config dataclass (:class:`~pcnn_fer.engine.recipes.Recipe`, :class:`~pcnn_fer.engine.options.TrainOptions`)
declares each field with its type and, in ``field(metadata=...)``:

* ``help``: the flag's help text;
* ``cli``: False for a field that has no flag (default True);
* ``flag``: the flag's spelling when it is not ``--field-name`` (e.g. ``--no-cache`` for ``use_cache=True``);
* ``choices``, ``metavar``: passed to argparse;
* ``also``: further visible spellings of the same (string) field, as ``(flag, metavar, help)`` triples, and
  ``deprecated``: old spellings that still work but are hidden from ``--help``; :func:`given_flag` tells which
  spelling the command line used (e.g. ``--label-rule`` for a dataset that has ``--image-variant`` is refused).

:func:`add_flags` turns the fields into argparse flags and :func:`flag_values` reads them back, so a new field gets
its flag without any CLI edit. :func:`check_types` refuses a value that does not match its field's annotation (a
recipe file with ``"epochs": "3"``) with one line naming the field.
"""

from __future__ import annotations

import argparse
import math
import os
import types
import typing
from dataclasses import MISSING, Field, fields
from typing import Any, Literal

from .errors import UsageError

__all__ = ["add_flags", "check_types", "cli_fields", "flag_name", "flag_values", "given_flag"]


def cli_fields(cls: type) -> list[Field]:
    """The fields of dataclass ``cls`` that have a command-line flag."""
    return [f for f in fields(cls) if f.metadata.get("cli", True)]


def flag_name(f: Field) -> str:
    """The flag of field ``f``: ``metadata["flag"]`` or ``--`` + the name with dashes."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


class _RecordSpelling(argparse.Action):
    """Store the value and the flag spelling it came with (read back by :func:`given_flag`)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        setattr(namespace, f"_{self.dest}_flag", option_string)


def given_flag(args: argparse.Namespace, dest: str) -> str | None:
    """The spelling the command line used for field ``dest`` when it has several (``also`` / ``deprecated``)."""
    return getattr(args, f"_{dest}_flag", None)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _parts(hint: Any) -> tuple[Any, bool]:
    """(the type without None, whether None is allowed)."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return (args[0] if len(args) == 1 else hint), len(args) < len(typing.get_args(hint))
    return hint, False


def _optional_count(text: str) -> int | None:
    """An optional count on the command line: ``0`` (or ``none``) means no value (no cap, torch's default)."""
    if text.strip().lower() == "none":
        return None
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text}")
    return value or None


def add_flags(group: Any, cls: type, overrides: bool, skip: tuple[str, ...] = (),
              only: tuple[str, ...] | None = None) -> None:
    """Add one flag per command-line field of ``cls`` (except ``skip``; only ``only`` if given) to ``group`` (a
    parser or argument group).

    ``overrides=True``: every flag is optional and absent from the namespace unless given (it overrides a value
    that comes from elsewhere, e.g. the recipe), booleans get ``--x`` / ``--no-x``. ``overrides=False``: flags
    default to the field defaults; a boolean flag flips its default, an optional boolean (default None) gets
    ``--x`` / ``--no-x``. Optional integers read ``0`` as None.
    """
    hints = _hints(cls)
    for f in cli_fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        base, optional = _parts(hints[f.name])
        kw: dict[str, Any] = {"dest": f.name, "help": f.metadata.get("help")}
        if "metavar" in f.metadata:
            kw["metavar"] = f.metadata["metavar"]
        if overrides:
            kw["default"] = argparse.SUPPRESS
        elif f.default is not MISSING:
            kw["default"] = f.default
        if base is bool:
            if overrides or optional:  # None: decided elsewhere (e.g. by the dataset)
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["action"] = "store_false" if f.default else "store_true"
        elif typing.get_origin(base) is Literal:
            kw["choices"] = list(typing.get_args(base))
        elif base is int:
            kw["type"] = _optional_count if optional else int
        elif base is float:
            kw["type"] = float
        elif base is not str:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag for type {base!r} (set metadata cli=False)")
        if "choices" in f.metadata:
            kw["choices"] = list(f.metadata["choices"])
        spellings = (*f.metadata.get("also", ()), *((old, None, argparse.SUPPRESS)
                                                    for old in f.metadata.get("deprecated", ())))
        if spellings:
            if base is not str:
                raise TypeError(f"{cls.__name__}.{f.name}: several spellings need a string field")
            kw["action"] = _RecordSpelling
        group.add_argument(flag_name(f), **kw)
        for flag, metavar, text in spellings:
            group.add_argument(flag, **{**kw, "help": text, **({"metavar": metavar} if metavar else {})})


def flag_values(args: argparse.Namespace, cls: type, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The values of ``cls``'s command-line fields present in ``args`` (by field name)."""
    return {f.name: getattr(args, f.name) for f in cli_fields(cls) if f.name not in skip and hasattr(args, f.name)}


def _matches(value: Any, hint: Any) -> bool:
    base, optional = _parts(hint)
    if value is None:
        return optional
    origin = typing.get_origin(base)
    if origin is Literal:
        return value in typing.get_args(base)
    if base is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is not None:
        return isinstance(value, origin)
    return isinstance(value, base) if isinstance(base, type) else True


def check_types(obj: Any, what: str) -> None:
    """UsageError naming ``what`` and the field when a field of dataclass ``obj`` does not match its annotation or
    is a non-finite number; ints in float fields become floats and paths in str fields strings (``obj`` may be
    frozen)."""
    hints = _hints(type(obj))
    for f in fields(obj):
        value, hint = getattr(obj, f.name), hints[f.name]
        base, _ = _parts(hint)
        if base is str and isinstance(value, os.PathLike):
            value = os.fspath(value)
            object.__setattr__(obj, f.name, value)
        if not _matches(value, hint):
            raise UsageError(f"{what}: {f.name} must be {_describe(hint)}, got {value!r}")
        if base is float and value is not None:
            if not math.isfinite(value):
                raise UsageError(f"{what}: {f.name} must be a finite number, got {value}")
            object.__setattr__(obj, f.name, float(value))


def _describe(hint: Any) -> str:
    base, optional = _parts(hint)
    if typing.get_origin(base) is Literal:
        text = "one of " + ", ".join(repr(a) for a in typing.get_args(base))
    else:
        text = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
            base, getattr(base, "__name__", str(base)))
    return text + (" or null" if optional else "")
