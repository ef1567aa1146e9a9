"""The event envelope: what travels on the log besides the Avro body.

The record key is the aggregate id (user id, content id). Headers carry the
event type, a UUIDv7 event id, when it happened, a correlation id and the
producer, as UTF-8 bytes so Kafka and the embedded log store them alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.ids import from_millis, new_id, to_millis, utcnow

Headers = tuple[tuple[str, bytes], ...]


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
