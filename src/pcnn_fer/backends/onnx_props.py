"""The ``metadata_props`` of an ONNX file, read straight from its protobuf encoding: no ``onnx`` import (about a
second of start-up on a CPU, measured in docs/performance.md) and no graph parsed, only the top-level fields
skipped by their lengths.

ONNX's ``ModelProto`` holds ``metadata_props`` as field 14, repeated ``StringStringEntryProto`` messages whose
``key`` is field 1 and ``value`` field 2 (``onnx/onnx.proto``). Protobuf's wire format: each field is a varint key
``(field number << 3) | wire type`` and then a varint (type 0), 8 bytes (1), a varint length and that many bytes
(2) or 4 bytes (5).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["OnnxFormatError", "read_metadata_props"]

_METADATA_PROPS = 14


class OnnxFormatError(ValueError):
    """Bytes that are not a protobuf-encoded ONNX model as far as its top level goes."""


def _varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise OnnxFormatError(f"a truncated or overlong varint at byte {pos}")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes | memoryview) -> list[tuple[int, int, bytes | memoryview | int]]:
    """(field number, wire type, value) of every field of one message; length-delimited values as views."""
    out, pos = [], 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        else:
            raise OnnxFormatError(f"wire type {wire} of field {number} at byte {pos}")
        if pos > len(data) or number == 0:
            raise OnnxFormatError(f"field {number} runs past the end ({len(data)} bytes)")
        out.append((number, wire, value))
    return out


def read_metadata_props(path: str | Path) -> dict[str, str]:
    """``{key: value}`` of the model's ``metadata_props`` (raises :class:`OnnxFormatError` for other bytes and
    :class:`OSError` for a file that cannot be read)."""
    data = memoryview(Path(path).read_bytes())
    props: dict[str, str] = {}
    for number, wire, value in _fields(data):
        if number != _METADATA_PROPS:
            continue
        if wire != 2:
            raise OnnxFormatError("metadata_props is not a message")
        entry = {n: bytes(v).decode("utf-8") for n, w, v in _fields(value) if w == 2 and n in (1, 2)}  # type: ignore[arg-type]
        props[entry.get(1, "")] = entry.get(2, "")
    return props
