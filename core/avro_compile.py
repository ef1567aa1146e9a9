"""Record decoders compiled from Avro schemas, for the decode hot path.

fastavro's reader is generic: for every field of every message it looks the field's
type up in the parsed schema and dispatches on it, and ``schemaless_reader`` re-checks
its arguments on each call. For the playback events that was about 5 µs of the 7.6 µs
a message cost to decode (bench/projection_throughput.py, cProfile). A record compiles
instead to one Python function that reads its fields in order and builds the dicts
directly: about half the time. Primitives, timestamp-millis longs, unions, nested
records, enums, arrays and maps compile (the catalog's events have all of them).

The compiled reader is stricter than fastavro, never laxer: a negative length, an
unknown union branch or a boolean byte other than 0 or 1 raises, and the caller then
decodes the message with fastavro, whose answer (a record or a precise error) stands.
Schemas with anything else (references to named types, fixed, other logical types) get
no compiled reader and stay with fastavro.
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


class _Compiler:
    """Lines of Python that read one value of a schema type, nested types included."""

    def __init__(self) -> None:
        self.n = 0
        self.scope: dict[str, Any] = {}

    def fresh(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def value(self, t: Any, var: str, ind: str) -> list[str] | None:
        if isinstance(t, list):  # a union: the branch index, then that branch's value
            lines = _varint("u", ind) + [f"{ind}u = (u >> 1) ^ -(u & 1)"]
            for j, branch in enumerate(t):
                body = self.value(branch, var, ind + "    ")
                if body is None:
                    return None
                lines.append(f"{ind}{'if' if j == 0 else 'elif'} u == {j}:")
                lines += body
            lines.append(f"{ind}else: raise ValueError('union branch')")
            return lines
        kind = _kind(t)
        if kind is not None:
            return _read(kind, var, ind)
        if not isinstance(t, dict) or "logicalType" in t:
            return None  # a named type's reference, or a logical type fastavro converts
        typ = t.get("type")
        if isinstance(typ, dict | list):
            return self.value(typ, var, ind)
        if typ == "record":
            return self.record(t, var, ind)
        if typ == "enum":
            symbols = self.fresh("_sym")
            self.scope[symbols] = tuple(t["symbols"])
            return _read("int", "e", ind) + [
                f"{ind}if e < 0: raise ValueError('enum index')",
                f"{ind}{var} = {symbols}[e]",  # past the end: IndexError
            ]
        if typ in ("array", "map"):
            return self.blocks(t, var, ind)
        return None

    def blocks(self, t: dict[str, Any], var: str, ind: str) -> list[str] | None:
        """An array or a map: blocks of items, each block's count first (negative: its
        size in bytes follows), until a count of 0."""
        is_map = t["type"] == "map"
        count, item, key = self.fresh("c"), self.fresh("i"), self.fresh("k")
        body = self.value(t["values"] if is_map else t["items"], item, ind + "        ")
        if body is None:
            return None
        loop = ind + "    "
        lines = [f"{ind}{var} = {'{}' if is_map else '[]'}", f"{ind}while True:"]
        lines += _read("long", count, loop)
        lines += [f"{loop}if {count} == 0: break", f"{loop}if {count} < 0:"]
        lines += [f"{loop}    {count} = -{count}"] + _read("long", "z", loop + "    ")
        lines.append(f"{loop}for _ in range({count}):")
        if is_map:
            lines += _read("string", key, loop + "    ")
        lines += body
        add = f"{var}[{key}] = {item}" if is_map else f"{var}.append({item})"
        lines.append(f"{loop}    {add}")
        return lines

    def record(self, t: dict[str, Any], var: str, ind: str) -> list[str] | None:
        lines: list[str] = []
        fields = []
        for field in t["fields"]:
            v = self.fresh("f")
            body = self.value(field["type"], v, ind)
            if body is None:
                return None
            lines += body
            fields.append(f"{json.dumps(field['name'])}: {v}")
        lines.append(f"{ind}{var} = {{{', '.join(fields)}}}")
        return lines


def compile_reader(schema: dict[str, Any]) -> Reader | None:
    """A decoder for a record schema (its JSON form), or None."""
    if schema.get("type") != "record":
        return None
    compiler = _Compiler()
    body = compiler.record(schema, "r", "    ")
    if body is None:
        return None
    lines = ["def read(b, p):", *body, "    return r, p"]
    scope: dict[str, Any] = {
        "_tail": _tail,
        "_d": struct.Struct("<d").unpack_from,
        "_f": struct.Struct("<f").unpack_from,
        "_fromts": datetime.fromtimestamp,
        "_UTC": UTC,
        **compiler.scope,
    }
    exec(compile("\n".join(lines), f"<avro reader {schema.get('name')}>", "exec"), scope)
    reader: Reader = scope["read"]
    return reader


def reader_for(path: Path) -> Reader | None:
    return compile_reader(json.loads(path.read_text()))
