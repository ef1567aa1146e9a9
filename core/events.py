"""The event envelope: what travels on the log besides the Avro body.

The record key is the aggregate id (user id, content id). Headers carry the
event type, a UUIDv7 event id, when it happened, a correlation id and the
producer, as UTF-8 bytes so Kafka and the embedded log store them alike.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.ids import from_millis, new_id, to_millis, utcnow

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Event:
    event_type: str
    key: str
    payload: Mapping[str, Any]
    event_id: str = field(default_factory=new_id)
    occurred_at: datetime = field(default_factory=utcnow)
    correlation_id: str | None = None
    producer: str = "mgw"

    def headers(self) -> Headers:
        hs: list[tuple[str, bytes]] = [
            ("event_type", self.event_type.encode()),
            ("event_id", self.event_id.encode()),
            ("occurred_at", str(to_millis(self.occurred_at)).encode()),
            ("producer", self.producer.encode()),
        ]
        if self.correlation_id:
            hs.append(("correlation_id", self.correlation_id.encode()))
        return tuple(hs)


_COUNT = struct.Struct("<H").pack
_LENGTHS = struct.Struct("<HI").pack
#: header names, encoded: a handful of them on every record of every append
_NAMES: dict[str, bytes] = {}


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> bytes:
    """Headers as one compact blob (u16 count, then u16-length key, u32-length value)."""
    out = bytearray(_COUNT(len(headers)))
    for k, v in headers:
        kb = _NAMES.get(k)
        if kb is None:
            kb = k.encode()
            if len(_NAMES) < 256:
                _NAMES[k] = kb
        out += _LENGTHS(len(kb), len(v))
        out += kb
        out += v
    return bytes(out)


def unpack_headers(blob: bytes) -> Headers:
    (n,) = struct.unpack_from("<H", blob, 0)
    pos, out = 2, []
    for _ in range(n):
        klen, vlen = struct.unpack_from("<HI", blob, pos)
        pos += 6
        key = bytes(blob[pos : pos + klen]).decode()
        pos += klen
        out.append((key, bytes(blob[pos : pos + vlen])))
        pos += vlen
    return tuple(out)


class LazyHeaders(Sequence[tuple[str, bytes]]):
    """Headers unpacked on first use: most consumers never read them."""

    __slots__ = ("_blob", "_items")

    def __init__(self, blob: bytes) -> None:
        self._blob = blob
        self._items: Headers | None = None

    def _get(self) -> Headers:
        if self._items is None:
            self._items = unpack_headers(self._blob)
        return self._items

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self._get()[i]

    def __len__(self) -> int:
        return len(self._get())

    def __iter__(self) -> Iterator[tuple[str, bytes]]:
        return iter(self._get())

    def __eq__(self, other: object) -> bool:
        return tuple(self) == tuple(other) if isinstance(other, Sequence) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._get())

    def __repr__(self) -> str:
        return repr(self._get())


def header(headers: Sequence[tuple[str, bytes]] | None, name: str) -> str | None:
    for k, v in headers or ():
        if k == name:
            return v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v)
    return None


def headers_dict(headers: Sequence[tuple[str, bytes]] | None) -> dict[str, str]:
    return {
        k: (v.decode("utf-8", "replace") if isinstance(v, bytes | bytearray) else str(v))
        for k, v in headers or ()
    }


def occurred_at_of(headers: Sequence[tuple[str, bytes]] | None) -> datetime | None:
    raw = header(headers, "occurred_at")
    return from_millis(int(raw)) if raw and raw.isdigit() else None
