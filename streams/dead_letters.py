"""Dead letters: records that cannot be decoded or applied.

They go to ``<topic>.dlq`` with the original key, value and headers, plus the
error, the projector and the original position, so an operator can inspect,
fix and re-publish them. Processing moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.metrics import DEAD_LETTERS
from streams.log import EventLog, LogRecord, OutgoingRecord


@dataclass(frozen=True, slots=True)
class DeadLetter:
    record: LogRecord
    reason: str  # "decode" | "rejected" | "apply"
    error: str


def dead_letter_topic(topic: str) -> str:
    return f"{topic}.dlq"


def _outgoing(projector: str, dl: DeadLetter) -> OutgoingRecord:
    r = dl.record
    extra = (
        ("dlq_error", dl.error[:2000].encode()),
        ("dlq_reason", dl.reason.encode()),
        ("dlq_projector", projector.encode()),
        ("dlq_topic", r.topic.encode()),
        ("dlq_partition", str(r.partition).encode()),
        ("dlq_offset", str(r.offset).encode()),
    )
    return OutgoingRecord(r.key or b"", r.value, tuple(r.headers) + extra)


async def send_dead_letters(log: EventLog, projector: str, letters: Sequence[DeadLetter]) -> None:
    by_topic: dict[str, list[OutgoingRecord]] = {}
    for dl in letters:
        by_topic.setdefault(dead_letter_topic(dl.record.topic), []).append(_outgoing(projector, dl))
        DEAD_LETTERS.labels(projector, dl.record.topic, dl.reason).inc()
    for topic, records in by_topic.items():
        await log.append_batch(topic, records)
