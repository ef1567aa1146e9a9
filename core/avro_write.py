"""Avro body writers compiled from a schema, for the encode hot path of bulk producers.

fastavro's writer is generic: for every value it dispatches on the schema, and for a
union it asks which branch validates. The catalog's events are mostly nullable
strings and ints, and an AvailabilityChanged carries about five offers of seven
fields with four unions each: 55 µs per event with a write-hinted schema, 76 µs
through ``AvroCodec.encode`` (bench/ingest_throughput.py, scale 3). A writer built
here is a tree of small closures fixed when the schema is compiled.

It is stricter than fastavro, never laxer: it takes only the types it knows exactly
(``str`` for a string, ``int`` but not ``bool`` for an int or long within its range,
``None`` for null, a timezone-aware ``datetime`` for a timestamp-millis, a symbol of
an enum, a list or tuple for an array, a dict holding every field for a record) and
raises ``Unsupported`` for anything else, so the caller writes that message with
fastavro, whose bytes (or precise error) then stand. Schemas with anything else
(maps, fixed, bytes, floats, unions other than ``[null, X]``, named-type references)
do not compile: ``compile_writer`` returns None. tests/test_avro_write.py holds the
bytes equal to fastavro's on every catalog event type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

#: (output buffer, value) -> None; raises Unsupported for a value it does not take
Writer = Callable[[bytearray, Any], None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INT_MIN, _INT_MAX = -(1 << 31), (1 << 31) - 1
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1
_pack_double = struct.Struct("<d").pack


class Unsupported(Exception):
    """A value this writer does not take: write the message with fastavro instead."""


def _varint(out: bytearray, n: int) -> None:
    """A long, zig-zag encoded (``n`` within 64 bits)."""
    n = (n << 1) ^ (n >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _write_string(out: bytearray, v: Any) -> None:
    if type(v) is not str:
        raise Unsupported
    b = v.encode()
    _varint(out, len(b))
    out += b


def _int_writer(lo: int, hi: int) -> Writer:
    def write(out: bytearray, v: Any) -> None:
        if type(v) is not int or not lo <= v <= hi:
            raise Unsupported
        _varint(out, v)

    return write


def _write_double(out: bytearray, v: Any) -> None:
    if type(v) is not float:
        raise Unsupported
    out += _pack_double(v)


#: encoded timestamps: a feed's offers share a few dates (a window opening for every region)
_STAMPS: dict[datetime, bytes] = {}


def _write_timestamp_millis(out: bytearray, v: Any) -> None:
    done = _STAMPS.get(v) if type(v) is datetime else None
    if done is None:
        if type(v) is not datetime or v.tzinfo is None:
            raise Unsupported  # naive datetimes and ints: fastavro's rules
        # fastavro's prepare_timestamp_millis, for an aware datetime
        delta = v - _EPOCH
        ms = (delta.days * 24 * 3600 + delta.seconds) * 1000 + int(delta.microseconds / 1000)
        if not _LONG_MIN <= ms <= _LONG_MAX:
            raise Unsupported
        buf = bytearray()
        _varint(buf, ms)
        if len(_STAMPS) >= 65536:
            _STAMPS.clear()
        done = _STAMPS[v] = bytes(buf)
    out += done


def _write_null(out: bytearray, v: Any) -> None:
    if v is not None:
        raise Unsupported


def _enum_writer(symbols: list[str]) -> Writer:
    index = {s: i for i, s in enumerate(symbols)}

    def write(out: bytearray, v: Any) -> None:
        i = index.get(v) if type(v) is str else None
        if i is None:
            raise Unsupported
        _varint(out, i)

    return write


def _array_writer(item: Writer) -> Writer:
    def write(out: bytearray, v: Any) -> None:
        if type(v) is not list and type(v) is not tuple:
            raise Unsupported
        if v:
            _varint(out, len(v))
            for x in v:
                item(out, x)
        out.append(0)

    return write


def _nullable_writer(inner: Writer, null_first: bool) -> Writer:
    none_branch, value_branch = (b"\x00", b"\x02") if null_first else (b"\x02", b"\x00")

    def write(out: bytearray, v: Any) -> None:
        if v is None:
            out += none_branch
        else:
            out += value_branch
            inner(out, v)

    return write


def _record_writer(fields: list[tuple[str, Writer]]) -> Writer:
    def write(out: bytearray, v: Any) -> None:
        if type(v) is not dict:
            raise Unsupported
        try:
            for name, w in fields:
                w(out, v[name])
        except KeyError:
            raise Unsupported from None  # a missing field: fastavro's default rules

    return write


def _compile(t: Any) -> Writer | None:
    if isinstance(t, str):
        return {
            "string": _write_string,
            "int": _int_writer(_INT_MIN, _INT_MAX),
            "long": _int_writer(_LONG_MIN, _LONG_MAX),
            "double": _write_double,
            "null": _write_null,
        }.get(t)
    if isinstance(t, list):
        if len(t) != 2 or "null" not in t or t[0] == t[1]:
            return None
        other = t[1] if t[0] == "null" else t[0]
        inner = _compile(other)
        return None if inner is None else _nullable_writer(inner, t[0] == "null")
    if not isinstance(t, dict):
        return None
    kind, logical = t.get("type"), t.get("logicalType")
    if logical is not None:
        return _write_timestamp_millis if (kind, logical) == ("long", "timestamp-millis") else None
    if kind == "enum":
        return _enum_writer(list(t["symbols"]))
    if kind == "array":
        item = _compile(t["items"])
        return None if item is None else _array_writer(item)
    if kind == "record":
        fields = []
        for f in t["fields"]:
            w = _compile(f["type"])
            if w is None:
                return None
            fields.append((f["name"], w))
        return _record_writer(fields)
    return _compile(kind) if isinstance(kind, str) else None


def compile_writer(schema: dict[str, Any]) -> Callable[[Any], bytes] | None:
    """A function that writes a record's Avro body, or None when the schema (raw JSON,
    as in its .avsc file) has a type this module does not compile."""
    write = _compile(schema) if schema.get("type") == "record" else None
    if write is None:
        return None

    def encode(record: Any) -> bytes:
        out = bytearray()
        write(out, record)
        return bytes(out)

    return encode
