"""Record decoders compiled from flat Avro schemas, for the decode hot path.

fastavro's reader is generic: for every field of every message it looks the field's
type up in the parsed schema and dispatches on it, and ``schemaless_reader`` re-checks
its arguments on each call. For the playback events that was about 5 µs of the 7.6 µs
a message cost to decode (bench/projection_throughput.py, cProfile). A record whose
fields are all primitives, unions of primitives or timestamp-millis longs (61 of the
83 released schemas) compiles instead to one straight-line Python function: about
half the time, the dict built directly.

The compiled reader is stricter than fastavro, never laxer: a negative length, an
unknown union branch or a boolean byte other than 0 or 1 raises, and the caller then
decodes the message with fastavro, whose answer (a record or a precise error) stands.
Schemas with anything else (arrays, maps, nested records, enums, other logical types)
get no compiled reader and stay with fastavro.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: (message bytes, start) -> (record, end)
Reader = Callable[[bytes, int], tuple[dict[str, Any], int]]

_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "string", "bytes"}


def _tail(b: bytes, p: int, v: int) -> tuple[int, int]:
    """The rest of a varint whose first byte ``v`` had its continuation bit set."""
    v &= 0x7F
    shift = 7
    while True:
        x = b[p]
        p += 1
        v |= (x & 0x7F) << shift
        if not x & 0x80:
            return v, p
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _kind(t: Any) -> str | None:
    """The reader kind of a field type, or None when it cannot be compiled."""
    if isinstance(t, str):
        return t if t in _PRIMITIVES else None
    if isinstance(t, dict):
        if t.get("type") == "long" and t.get("logicalType") == "timestamp-millis":
            return "timestamp"
        if t.get("type") in _PRIMITIVES and "logicalType" not in t:
            return str(t["type"])
    return None


def _varint(into: str, ind: str) -> list[str]:
    return [
        f"{ind}{into} = b[p]; p += 1",
        f"{ind}if {into} & 0x80: {into}, p = _tail(b, p, {into})",
    ]


def _read(kind: str, var: str, ind: str) -> list[str]:
    """Lines that read one value of ``kind`` into ``var``."""
    if kind == "null":
        return [f"{ind}{var} = None"]
    if kind == "boolean":
        return [
            f"{ind}{var} = b[p]; p += 1",
            f"{ind}if {var} > 1: raise ValueError('boolean byte')",
            f"{ind}{var} = {var} == 1",
        ]
    if kind in ("long", "timestamp"):
        # a long is usually several bytes (a millisecond timestamp is six): the continuation
        # is read inline, not by a call to _tail (0.13 of a 4 µs message)
        lines = [
            f"{ind}{var} = b[p]; p += 1",
            f"{ind}if {var} & 0x80:",
            f"{ind}    {var} &= 0x7F; s = 7",
            f"{ind}    while True:",
            f"{ind}        x = b[p]; p += 1; {var} |= (x & 0x7F) << s",
            f"{ind}        if not x & 0x80: break",
            f"{ind}        s += 7",
            f"{ind}        if s > 63: raise ValueError('varint longer than 10 bytes')",
            f"{ind}{var} = ({var} >> 1) ^ -({var} & 1)",
        ]
        if kind == "timestamp":
            lines.append(f"{ind}{var} = _fromts({var} / 1000, _UTC)")
        return lines
    if kind == "int":
        lines = _varint(var, ind) + [f"{ind}{var} = ({var} >> 1) ^ -({var} & 1)"]
        if kind == "timestamp":
            lines.append(f"{ind}{var} = _fromts({var} / 1000, _UTC)")
        return lines
    if kind in ("float", "double"):
        # no bounds check: unpack_from raises on a buffer too short
        size, unpack = (4, "_f") if kind == "float" else (8, "_d")
        return [f"{ind}{var} = {unpack}(b, p)[0]; p += {size}"]
    # string or bytes: a zigzag length that must be even (non-negative)
    convert = ".decode()" if kind == "string" else ""
    return _varint("n", ind) + [
        f"{ind}if n & 1: raise ValueError('negative length')",
        f"{ind}n >>= 1",
        f"{ind}if p + n > len(b): raise ValueError('truncated')",
        f"{ind}{var} = b[p:p + n]{convert}; p += n",
    ]


def compile_reader(schema: dict[str, Any]) -> Reader | None:
    """A decoder for a flat record schema (its JSON form), or None."""
    if schema.get("type") != "record":
        return None
    lines = ["def read(b, p):"]
    names: list[str] = []
    for i, field in enumerate(schema["fields"]):
        var = f"v{i}"
        names.append(field["name"])
        t = field["type"]
        if isinstance(t, list):
            kinds = [_kind(x) for x in t]
            if not kinds or any(k is None for k in kinds):
                return None
            lines += _varint("u", "    ")
            lines.append("    u = (u >> 1) ^ -(u & 1)")
            for j, k in enumerate(kinds):
                lines.append(f"    {'if' if j == 0 else 'elif'} u == {j}:")
                lines += _read(str(k), var, "        ")
            lines.append("    else: raise ValueError('union branch')")
        else:
            kind = _kind(t)
            if kind is None:
                return None
            lines += _read(kind, var, "    ")
    record = ", ".join(f"{json.dumps(n)}: v{i}" for i, n in enumerate(names))
    lines.append(f"    return {{{record}}}, p")
    scope: dict[str, Any] = {
        "_tail": _tail,
        "_d": struct.Struct("<d").unpack_from,
        "_f": struct.Struct("<f").unpack_from,
        "_fromts": datetime.fromtimestamp,
        "_UTC": UTC,
    }
    exec(compile("\n".join(lines), f"<avro reader {schema.get('name')}>", "exec"), scope)
    reader: Reader = scope["read"]
    return reader


def reader_for(path: Path) -> Reader | None:
    return compile_reader(json.loads(path.read_text()))
