"""``predictions.parquet``: the rows of ``predictions.csv`` (same columns, same row builder) as a typed Parquet table,
streamed in row groups to a temporary file and put in place only when the run completes (pyarrow; the ``scale``
extra).

Column types: ``frame``, ``face`` and ``face_id`` are integers, ``time_s`` and the ``smooth_<class>`` probabilities
float64, ``source``, ``label``, ``smooth_label`` and ``error`` strings (the video-only columns null for photos,
``error`` null but on the one row of a skipped input); any other column is typed from its first row group (numbers →
float64, anything else → string), so columns added to the CSV row builder flow through without a change here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..fileio import publish, temporary_beside

#: Rows kept in memory before they are written as one row group.
ROW_GROUP = 8192
_INTEGER_COLUMNS = frozenset({"frame", "face", "face_id"})
_STRING_COLUMNS = frozenset({"source", "label", "smooth_label", "error"})
_FLOAT_COLUMNS = frozenset({"time_s"})
_FLOAT_PREFIXES = ("smooth_",)


def require_pyarrow(flag: str = "--save-parquet") -> None:
    """Raise a one-line :class:`UsageError` naming the extra when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise UsageError(f"{flag} needs pyarrow: pip install 'pcnn-fer[scale]'") from None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _text(value: Any) -> str:
    """A string Parquet can hold: undecodable file names (surrogates) written as backslash escapes, as in the CSV."""
    return str(value).encode("utf-8", "backslashreplace").decode("utf-8")


class ParquetRows:
    """A Parquet file written row group by row group from CSV-style rows (``header`` names their columns)."""

    def __init__(self, path: Path, header: Sequence[str]) -> None:
        require_pyarrow()
        self.path, self.header = Path(path), list(header)
        fd, self._tmp = temporary_beside(self.path)
        os.close(fd)
        self._rows: list[list[Any]] = []
        self._writer: Any = None
        self._schema: Any = None

    def add(self, rows: Sequence[Sequence[Any]]) -> None:
        """Queue rows (each in ``header`` order); a full row group is written out."""
        self._rows.extend(rows)
        if len(self._rows) >= ROW_GROUP:
            self._flush()

    def _types(self) -> Any:
        import pyarrow as pa

        fields = []
        for k, name in enumerate(self.header):
            values = [row[k] for row in self._rows if row[k] not in ("", None)]
            if name in _INTEGER_COLUMNS:
                kind = pa.int64()
            elif name in _STRING_COLUMNS:
                kind = pa.string()
            elif name in _FLOAT_COLUMNS or name.startswith(_FLOAT_PREFIXES):
                kind = pa.float64()
            elif not values or not all(map(_is_number, values)):
                kind = pa.string()
            else:
                kind = pa.float64()
            fields.append(pa.field(name, kind))
        return pa.schema(fields)

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows and self._writer is not None:
            return
        if self._schema is None:
            self._schema = self._types()
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        convert = {pa.int64(): int, pa.float64(): float, pa.string(): _text}
        columns = []
        for k, field in enumerate(self._schema):
            cast = convert[field.type]
            try:
                values = [None if row[k] in ("", None) else cast(row[k]) for row in self._rows]
            except (TypeError, ValueError) as e:
                raise ValueError(f"{self.path.name}: column {field.name!r} holds {field.type} values, got {e}") \
                    from None
            columns.append(pa.array(values, type=field.type))
        self._writer.write_table(pa.Table.from_arrays(columns, schema=self._schema))
        self._rows = []

    def close(self, complete: bool = True) -> Path | None:
        """Finish the file and put it in place when ``complete`` (else drop it); its path, or None."""
        try:
            if complete:
                self._flush()
        finally:
            if self._writer is not None:
                self._writer.close()
        if not complete:
            Path(self._tmp).unlink(missing_ok=True)
            return None
        publish(self._tmp, self.path)
        return self.path


__all__ = ["ParquetRows", "require_pyarrow"]
