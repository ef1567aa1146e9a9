"""Appending many events at once, for producers that append in bulk (feed ingest).

``Publisher.publish_many`` encodes each event with ``AvroCodec.encode``, which hands
fastavro a schema parsed without the write hint, so fastavro parses it again for every
message: about two thirds of the encode time (cProfile, bench/ingest_throughput.py:
~60 µs of a PlatformTitleObserved's encode). Here each event type's current schema
is compiled to a writer (core/avro_write.py) and, for what that does not take,
parsed once with the hint and reused. Both write the codec's bytes (same marker and
fingerprint; tests/test_bulk_publish.py and tests/test_avro_write.py check them), and
the append metric is counted once per (topic, type) instead of once per event.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import fastavro

from core import tracing
from core.avro_write import compile_writer
from core.codec import MARKER, AvroCodec
from core.events import Event
from core.metrics import EVENTS_APPENDED
from core.topics import topic_for
from streams.log import OutgoingRecord, Position
from streams.publisher import Publisher


class BulkEncoder:
    """``AvroCodec.encode``, byte for byte, with each writer schema parsed once."""

    def __init__(self, codec: AvroCodec) -> None:
        self.codec = codec
        self._writers: dict[str, tuple[bytes, Any, Callable[[Any], bytes] | None]] = {}

    def _writer(self, event_type: str) -> tuple[bytes, Any, Callable[[Any], bytes] | None]:
        w = self._writers.get(event_type)
        if w is None:
            schema = self.codec.current(event_type)  # unknown type: the codec's error
            raw = json.loads(schema.path.read_text())
            w = (MARKER + schema.fingerprint, fastavro.parse_schema(raw), compile_writer(raw))
            self._writers[event_type] = w
        return w

    def encode(self, event_type: str, payload: Any) -> bytes:
        head, parsed, compiled = self._writer(event_type)
        if compiled is not None:
            try:
                return head + compiled(payload)
            except Exception:  # noqa: BLE001 - a value it does not take: fastavro decides
                pass
        buf = io.BytesIO()
        buf.write(head)
        try:
            fastavro.schemaless_writer(buf, parsed, payload)
        except (TypeError, ValueError, KeyError, AttributeError):
            return self.codec.encode(event_type, payload)  # raises EncodeError, explained
        return buf.getvalue()

    def record(self, event: Event) -> OutgoingRecord:
        headers = event.headers()
        if tracing.enabled():  # as Publisher.to_record: the trace travels with the event
            headers = (*headers, *tracing.context_headers())
        return OutgoingRecord(
            event.key.encode(), self.encode(event.event_type, event.payload), headers
        )


async def publish_bulk(
    publisher: Publisher, events: Sequence[Event], encoder: BulkEncoder | None = None
) -> list[Position]:
    """``publisher.publish_many(events)``: the same records on the same topics in the
    same order per key, encoded by ``encoder`` (one per publisher codec, reused)."""
    enc = encoder or BulkEncoder(publisher.codec)
    by_topic: dict[str, list[int]] = {}
    for i, e in enumerate(events):
        by_topic.setdefault(topic_for(e.event_type).name, []).append(i)
    out: list[Position | None] = [None] * len(events)
    for topic, idx in by_topic.items():
        records = [enc.record(events[i]) for i in idx]
        positions = await publisher.log.append_batch(topic, records)
        counts = Counter(events[i].event_type for i in idx)
        for i, pos in zip(idx, positions, strict=True):
            out[i] = pos
        for event_type, n in counts.items():
            EVENTS_APPENDED.labels(topic, event_type).inc(n)
    return out  # type: ignore[return-value]
