"""Compiled readers (core/avro_compile.py) agree with fastavro, message for message."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.avro_compile import compile_reader, reader_for
from core.codec import HEADER_LEN, AvroCodec, MalformedEventError

CODEC = AvroCodec()
COMPILED = [v for v in CODEC.versions if reader_for(v.path) is not None]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _value(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, list):
        return st.one_of(*[_value(k) for k in kind])
    if isinstance(kind, dict):
        if kind.get("logicalType") == "timestamp-millis":
            return st.integers(-(2**40), 2**42).map(lambda ms: _EPOCH + timedelta(milliseconds=ms))
        typ = kind["type"]
        if typ == "record":
            return _record(kind)
        if typ == "enum":
            return st.sampled_from(kind["symbols"])
        if typ == "array":
            return st.lists(_value(kind["items"]), max_size=4)
        if typ == "map":
            return st.dictionaries(st.text(max_size=8), _value(kind["values"]), max_size=4)
        kind = typ
    if isinstance(kind, dict):
        return _value(kind)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": st.integers(-(2**31), 2**31 - 1),
        "long": st.integers(-(2**63), 2**63 - 1),
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "string": st.text(max_size=80),
        "bytes": st.binary(max_size=80),
    }[kind]


def _record(schema: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({f["name"]: _value(f["type"]) for f in schema["fields"]})


def _payloads(version: Any) -> st.SearchStrategy[dict[str, Any]]:
    return _record(json.loads(version.path.read_text()))


def _fastavro(version: Any, body: bytes) -> Any:
    buf = io.BytesIO(body)
    record = fastavro.schemaless_reader(buf, version.parsed, None)
    if buf.tell() != len(body):
        raise ValueError("trailing bytes")
    return record


def test_every_released_schema_compiles() -> None:
    # flat records (the playback and library events) and the catalog's nested ones alike
    assert len(COMPILED) == len(CODEC.versions)
    names = {v.event_type for v in COMPILED}
    assert {"PlaybackProgressed", "WatchRecorded", "AvailabilityChanged"} <= names


def test_what_fastavro_converts_or_resolves_does_not_compile() -> None:
    date = {"type": "int", "logicalType": "date"}
    ref = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "mgw.Other"}]}
    fixed = {"type": "fixed", "name": "F", "size": 4}
    for t in (date, {"type": "array", "items": date}, fixed):
        assert (
            compile_reader({"type": "record", "name": "R", "fields": [{"name": "a", "type": t}]})
            is None
        )
    assert compile_reader(ref) is None
    assert compile_reader({"type": "enum", "name": "E", "symbols": ["A"]}) is None


def test_blocks_with_a_byte_size_and_enums_out_of_range() -> None:
    """Arrays and maps as a writer may block them (a negative count, then the block's size
    in bytes), and an enum index past the symbols: read as fastavro reads, or refused."""
    schema = {
        "type": "record",
        "name": "R",
        "fields": [
            {"name": "xs", "type": {"type": "array", "items": "long"}},
            {"name": "m", "type": {"type": "map", "values": "string"}},
            {"name": "e", "type": {"type": "enum", "name": "E", "symbols": ["A", "B"]}},
        ],
    }
    read = compile_reader(schema)
    assert read is not None
    parsed = fastavro.parse_schema(schema)

    def zz(n: int) -> bytes:
        out = bytearray()
        n = (n << 1) ^ (n >> 63)
        while n & ~0x7F:
            out.append((n & 0x7F) | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    items = zz(5) + zz(-7)
    body = zz(-2) + zz(len(items)) + items + zz(1) + zz(300) + zz(0)  # [5, -7], then [300]
    body += zz(1) + zz(1) + b"k" + zz(2) + b"vv" + zz(0)  # {"k": "vv"}
    record, end = read(body + zz(1), 0)
    assert end == len(body) + 1
    assert record == fastavro.schemaless_reader(io.BytesIO(body + zz(1)), parsed, None)
    assert record == {"xs": [5, -7, 300], "m": {"k": "vv"}, "e": "B"}
    for bad in (zz(2), zz(-1)):  # no symbol 2, no negative index
        with pytest.raises((IndexError, ValueError)):
            read(body + bad, 0)


@pytest.mark.parametrize("version", COMPILED, ids=lambda v: f"{v.event_type}.v{v.version}")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_compiled_reader_equals_fastavro(version: Any, data: st.DataObject) -> None:
    payload = data.draw(_payloads(version))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, version.parsed, payload)
    body = buf.getvalue()
    read = reader_for(version.path)
    assert read is not None
    record, end = read(body, 0)
    assert end == len(body)
    assert record == _fastavro(version, body)


def _damage_and_compare(version: Any, good: bytes, cut: int, flip: int, byte: int) -> None:
    """Cut ``good`` short (cut < 30) or overwrite one byte; the compiled reader then raises,
    ends elsewhere, or reads exactly what fastavro reads."""
    read = reader_for(version.path)
    assert read is not None
    damaged = bytearray(good[: max(0, len(good) - cut)] if cut < 30 else good)
    if damaged and cut >= 30:
        damaged[flip % len(damaged)] = byte
    body = bytes(damaged)
    try:
        record, end = read(body, 0)
    except Exception:
        return
    if end != len(body):
        return
    assert record == _fastavro(version, body)


@settings(max_examples=300, deadline=None)
@given(
    position=st.floats(allow_nan=False, allow_infinity=False),
    cut=st.integers(0, 60),
    flip=st.integers(0, 60),
    byte=st.integers(0, 255),
)
def test_a_damaged_message_is_never_read_differently(
    position: float, cut: int, flip: int, byte: int
) -> None:
    """Cut or altered bytes: the compiled reader raises, ends elsewhere, or reads what
    fastavro reads; never a record that fastavro would refuse or read otherwise."""
    version = CODEC.current("PlaybackProgressed")
    good = CODEC.encode(
        "PlaybackProgressed",
        {"user_id": "u1", "content_id": "c1", "device_id": "tv", "position_s": position,
         "duration_s": 7200.0, "occurred_at": datetime(2026, 1, 2, tzinfo=UTC)},
    )[HEADER_LEN:]  # fmt: skip
    _damage_and_compare(version, good, cut, flip, byte)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), cut=st.integers(0, 60), flip=st.integers(0, 400), byte=st.integers(0, 255))
def test_a_damaged_nested_message_is_never_read_differently(
    data: st.DataObject, cut: int, flip: int, byte: int
) -> None:
    """The same for the catalog's nested events: offers in an array, enums, unions."""
    version = CODEC.current("AvailabilityChanged")
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, version.parsed, data.draw(_payloads(version)))
    _damage_and_compare(version, buf.getvalue(), cut, flip, byte)


def test_decode_many_takes_the_compiled_path_and_still_pins_bad_records() -> None:
    play = {"user_id": "u", "content_id": "c", "device_id": "tv", "position_s": 1.0,
            "duration_s": None, "occurred_at": datetime(2026, 1, 2, tzinfo=UTC)}  # fmt: skip
    good = [CODEC.encode("PlaybackProgressed", {**play, "position_s": float(i)}) for i in range(20)]
    bad = good[3][:-1]  # truncated: the group falls back to fastavro, which pins it
    got = CODEC.decode_many([*good[:10], bad, *good[10:]])
    assert isinstance(got[10], MalformedEventError)
    ok = [g for i, g in enumerate(got) if i != 10]
    assert [r[1]["position_s"] for r in ok] == [float(i) for i in range(20)]
    assert all(r[1] == CODEC.decode(d)[1] for r, d in zip(ok, good, strict=True))
