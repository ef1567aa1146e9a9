"""Turning domain events into log records: encode, route, append."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from core import tracing
from core.codec import AvroCodec, default_codec
from core.events import Event
from core.metrics import EVENTS_APPENDED
from core.topics import topic_for
from streams.log import EventLog, OutgoingRecord, Position


@lru_cache(maxsize=512)
def _appended(topic: str, event_type: str) -> Any:
    """The counter's child for one (topic, type): labels() validates and locks per call."""
    return EVENTS_APPENDED.labels(topic, event_type)


class Publisher:
    def __init__(self, log: EventLog, codec: AvroCodec | None = None) -> None:
        self.log = log
        self.codec = codec or default_codec()

    def to_record(self, event: Event) -> OutgoingRecord:
        value = self.codec.encode(event.event_type, event.payload)
        headers = event.headers()
        if tracing.enabled():  # the request's trace travels with the event
            headers = (*headers, *tracing.context_headers())
        return OutgoingRecord(event.key.encode(), value, headers)

    async def publish(self, event: Event) -> Position:
        topic = topic_for(event.event_type).name
        pos = await self.log.append(topic, self.to_record(event))
        _appended(topic, event.event_type).inc()
        return pos

    async def publish_many(self, events: Sequence[Event]) -> list[Position]:
        """Append events of possibly several topics; order is kept per key."""
        by_topic: dict[str, list[int]] = {}
        for i, e in enumerate(events):
            by_topic.setdefault(topic_for(e.event_type).name, []).append(i)
        out: list[Position | None] = [None] * len(events)
        for topic, idx in by_topic.items():
            positions = await self.log.append_batch(topic, [self.to_record(events[i]) for i in idx])
            for i, pos in zip(idx, positions, strict=True):
                out[i] = pos
                _appended(topic, events[i].event_type).inc()
        return out  # type: ignore[return-value]
