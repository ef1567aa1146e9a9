"""Avro single-object encoding for events.

Wire format (Avro specification, "Single-object encoding"):
``C3 01`` marker, the writer schema's 8-byte CRC-64-AVRO fingerprint in
little-endian order, then the Avro binary body. Every message therefore names
its writer schema without a registry service. Readers look the fingerprint up
among every schema file ever released and resolve it against the *current*
reader schema of that event type, so adding a field with a default never breaks
a consumer.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema
import fastavro.validation

from core.avro_compile import Reader, reader_for
from core.avro_write import compile_writer

MARKER = b"\xc3\x01"
HEADER_LEN = 10
SCHEMA_ROOT = Path(__file__).resolve().parent.parent / "schemas" / "avro"
_VERSIONED = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_]*)\.v(?P<version>\d+)\.avsc$")


class CodecError(Exception):
    """Base for every encode/decode failure; the message says what to fix."""


class MalformedEventError(CodecError):
    """The bytes are not an Avro single-object encoded message."""


class UnknownSchemaError(CodecError):
    """The fingerprint names no released schema (or the event type is unknown)."""

    def __init__(self, message: str, fingerprint: bytes | None = None) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint


class EncodeError(CodecError):
    """A payload does not match its schema."""


@dataclass(frozen=True, slots=True, eq=False)
class SchemaVersion:
    event_type: str  # the record's short name, e.g. "PlaybackProgressed"
    full_name: str  # e.g. "mgw.playback.PlaybackProgressed"
    context: str  # folder under schemas/avro, e.g. "playback"
    version: int
    path: Path
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian, as written on the wire


def fingerprint_of(parsed_schema: Any) -> bytes:
    canonical = fastavro.schema.to_parsing_canonical_form(parsed_schema)
    # fastavro renders CRC-64-AVRO as the little-endian byte sequence already,
    # which is exactly the order single-object encoding puts on the wire.
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


def load_schemas(root: Path = SCHEMA_ROOT) -> list[SchemaVersion]:
    versions: list[SchemaVersion] = []
    for path in sorted(root.rglob("*.avsc")):
        m = _VERSIONED.match(path.name)
        if not m:
            raise CodecError(f"{path}: schema files are named <EventType>.v<N>.avsc")
        raw = json.loads(path.read_text())
        parsed = fastavro.parse_schema(raw, _write_hint=False)
        if raw.get("name") != m["name"]:
            raise CodecError(f"{path}: record name {raw.get('name')!r} != file name")
        versions.append(
            SchemaVersion(
                event_type=m["name"],
                full_name=f"{raw.get('namespace', '')}.{raw['name']}".lstrip("."),
                context=path.parent.name,
                version=int(m["version"]),
                path=path,
                parsed=parsed,
                fingerprint=fingerprint_of(parsed),
            )
        )
    return versions


_UNSET: Any = object()


class AvroCodec:
    """Encodes with the newest version of an event type; decodes any released one."""

    def __init__(self, root: Path = SCHEMA_ROOT) -> None:
        self.versions = load_schemas(root)
        self._by_fp: dict[bytes, SchemaVersion] = {}
        self._current: dict[str, SchemaVersion] = {}
        for v in self.versions:
            if v.fingerprint in self._by_fp:
                other = self._by_fp[v.fingerprint].path
                raise CodecError(f"{v.path} and {other} have the same canonical form")
            self._by_fp[v.fingerprint] = v
            cur = self._current.get(v.event_type)
            if cur is not None and cur.full_name != v.full_name:
                raise CodecError(f"event type {v.event_type} defined in two namespaces")
            if cur is None or v.version > cur.version:
                self._current[v.event_type] = v
        # The 10-byte header of each writer (marker + fingerprint), for one dict lookup per
        # message; and, for writers that are their type's current version and flat, a
        # compiled reader (core/avro_compile.py).
        self._by_header = {MARKER + fp: v for fp, v in self._by_fp.items()}
        self._compiled: dict[bytes, Reader | None] = {
            v.fingerprint: reader_for(v.path) for v in self._current.values()
        }
        # and a compiled writer per current version where its schema compiles
        # (core/avro_write.py): 3.5 µs instead of fastavro's 14 µs for a playback report,
        # on every API write
        self._writers: dict[str, Any] = {}

    @property
    def event_types(self) -> list[str]:
        return sorted(self._current)

    def current(self, event_type: str) -> SchemaVersion:
        try:
            return self._current[event_type]
        except KeyError:
            raise UnknownSchemaError(f"unknown event type {event_type!r}") from None

    def encode(self, event_type: str, payload: Mapping[str, Any]) -> bytes:
        writer = self._writers.get(event_type, _UNSET)
        if writer is _UNSET:
            schema = self.current(event_type)
            writer = self._writers[event_type] = (
                MARKER + schema.fingerprint,
                compile_writer(json.loads(schema.path.read_text())),
            )
        head, compiled = writer
        if compiled is not None:
            try:
                return head + compiled(payload)  # type: ignore[no-any-return]
            except Exception:  # noqa: BLE001 - a value it does not take: fastavro decides
                pass
        schema = self.current(event_type)
        buf = io.BytesIO()
        buf.write(MARKER)
        buf.write(schema.fingerprint)
        try:
            fastavro.schemaless_writer(buf, schema.parsed, payload)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            raise EncodeError(self._explain(schema, payload, exc)) from exc
        return buf.getvalue()

    def writer_of(self, data: bytes) -> SchemaVersion:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise MalformedEventError(f"expected bytes, got {type(data).__name__} (a tombstone?)")
        if len(data) < HEADER_LEN or data[:2] != MARKER:
            raise MalformedEventError(
                "not an Avro single-object encoded message (expected marker C3 01)"
            )
        fp = bytes(data[2:HEADER_LEN])
        try:
            return self._by_fp[fp]
        except KeyError:
            raise UnknownSchemaError(
                f"no released schema has fingerprint {fp.hex()}", fingerprint=fp
            ) from None

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        writer = self.writer_of(data)
        reader = self._current[writer.event_type]
        body = io.BytesIO(data)
        body.seek(HEADER_LEN)
        try:
            if reader is writer:
                record = fastavro.schemaless_reader(body, writer.parsed, None)
            else:
                record = fastavro.schemaless_reader(body, writer.parsed, reader.parsed)
        except Exception as exc:  # fastavro raises assorted errors on bad bodies
            raise MalformedEventError(
                f"{writer.event_type} v{writer.version}: body does not decode: {exc}"
            ) from exc
        if body.tell() != len(data):
            raise MalformedEventError(
                f"{writer.event_type} v{writer.version}: {len(data) - body.tell()} trailing bytes"
            )
        return writer.event_type, record  # type: ignore[return-value]

    def decode_many(self, datas: Sequence[bytes]) -> list[tuple[str, dict[str, Any]] | CodecError]:
        """Decode a batch; each item is (event_type, payload) or the CodecError for it.

        Bodies that share a writer schema are read one after another from a single
        buffer, each checked to end exactly at its own boundary, and top-level timestamps
        are converted here: about twice as fast as ``decode`` per message. A group that
        fails is decoded one by one, so a single bad body is pinned to its own record.
        """
        out: list[tuple[str, dict[str, Any]] | CodecError] = [None] * len(datas)  # type: ignore[list-item]
        groups: dict[bytes, list[int]] = {}
        by_header = self._by_header
        for i, data in enumerate(datas):
            writer = by_header.get(data[:HEADER_LEN]) if type(data) is bytes else None
            if writer is None:  # not a known header: writer_of says what is wrong
                try:
                    writer = self.writer_of(data)
                except CodecError as exc:
                    out[i] = exc
                    continue
            groups.setdefault(writer.fingerprint, []).append(i)
        for fp, idx in groups.items():
            writer = self._by_fp[fp]
            compiled = self._compiled.get(fp)
            if compiled is not None and self._decode_compiled(
                compiled, writer.event_type, datas, idx, out
            ):
                continue
            if len(idx) >= _BLOCK_MIN:
                decoded = self._decode_block(writer, [datas[i] for i in idx])
                if decoded is not None:
                    for i, record in zip(idx, decoded, strict=True):
                        out[i] = (writer.event_type, record)
                    continue
            for i in idx:
                try:
                    out[i] = self.decode(datas[i])
                except CodecError as exc:
                    out[i] = exc
        return out

    @staticmethod
    def _decode_compiled(
        read: Reader,
        event_type: str,
        datas: Sequence[bytes],
        idx: list[int],
        out: list[Any],
    ) -> bool:
        """Decode a group with its compiled reader; False (nothing written) when any
        message does not read cleanly, so fastavro decides the whole group."""
        records = []
        try:
            for i in idx:
                d = datas[i]
                record, end = read(d, HEADER_LEN)
                if end != len(d):
                    return False
                records.append(record)
        except Exception:
            return False
        for i, record in zip(idx, records, strict=True):
            out[i] = (event_type, record)
        return True

    def _decode_block(self, writer: SchemaVersion, datas: list[bytes]) -> list[Any] | None:
        reader = self._current[writer.event_type]
        # Same schema, so top-level timestamps can be read as plain longs and converted
        # here: fastavro's own conversion costs about as much as decoding the rest.
        stamps = _top_level_timestamps(writer) if reader is writer else None
        schema = _plain_schema(writer) if stamps else writer.parsed
        resolve_to = None if reader is writer else reader.parsed
        # One buffer for the whole group, read message after message; every message must
        # end exactly where its own bytes end, or the group is decoded one by one.
        buf = io.BytesIO(b"".join([d[HEADER_LEN:] for d in datas]))
        read, end = fastavro.schemaless_reader, 0
        records: list[Any] = []
        try:
            for d in datas:
                records.append(read(buf, schema, resolve_to))
                end += len(d) - HEADER_LEN
                if buf.tell() != end:
                    return None
        except Exception:
            return None
        if stamps:
            from_ts, utc = datetime.fromtimestamp, UTC
            for r in records:
                for f in stamps:
                    v = r[f]
                    if v is not None:
                        r[f] = from_ts(v / 1000, utc)
        return records

    @staticmethod
    def _explain(schema: SchemaVersion, payload: Mapping[str, Any], exc: Exception) -> str:
        try:
            fastavro.validation.validate(payload, schema.parsed, raise_errors=True)
        except fastavro.validation.ValidationError as verr:
            return f"{schema.event_type}: {verr}"
        return f"{schema.event_type}: {exc}"


_BLOCK_MIN = 8  # below this, per-message decoding is as fast


def _is_ts_millis(t: Any) -> bool:
    return (
        isinstance(t, dict)
        and t.get("type") == "long"
        and (t.get("logicalType") == "timestamp-millis")
    )


@lru_cache(maxsize=256)
def _top_level_timestamps(writer: SchemaVersion) -> tuple[str, ...] | None:
    """Top-level timestamp-millis fields (plain or nullable), or None when the schema has
    logical types elsewhere (then fastavro converts everything itself)."""
    raw = json.loads(writer.path.read_text())
    found: list[str] = []
    for f in raw["fields"]:
        t = f["type"]
        branches = t if isinstance(t, list) else [t]
        if any(_is_ts_millis(b) for b in branches):
            found.append(f["name"])
    stripped = json.dumps(_strip_ts(raw, set(found)))
    return tuple(found) if "logicalType" not in stripped else None


def _strip_ts(raw: dict[str, Any], names: set[str]) -> dict[str, Any]:
    out = dict(raw)
    out["fields"] = []
    for f in raw["fields"]:
        f = dict(f)
        if f["name"] in names:
            t = f["type"]
            f["type"] = (
                [("long" if _is_ts_millis(b) else b) for b in t] if isinstance(t, list) else "long"
            )
        out["fields"].append(f)
    return out


@lru_cache(maxsize=256)
def _plain_schema(writer: SchemaVersion) -> Any:
    stamps = set(_top_level_timestamps(writer) or ())
    return fastavro.parse_schema(_strip_ts(json.loads(writer.path.read_text()), stamps))


@lru_cache(maxsize=1)
def default_codec() -> AvroCodec:
    return AvroCodec()
