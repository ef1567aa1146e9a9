"""The log port: one interface, two backends (``embedded`` and ``kafka``).

Contract (tests/test_log_contract.py runs it against both backends):

* ``append`` returns the record's ``Position``; the partition is
  ``murmur2(key) % partitions`` (the Java client's partitioner, so producers in
  other languages agree with us on where a key lives).
* ``read`` returns records of one topic-partition in offset order, starting at
  ``offset``; offsets are dense in the embedded backend, increasing in Kafka.
* ``wait`` blocks cheaply until the partition has a record at ``offset`` or the
  timeout passes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, Protocol

from aiokafka.partitioner import murmur2  # pure function, Java-compatible

from core.events import Headers
from core.topics import TopicSpec

#: the largest record a log takes (key, value and headers): Kafka's default
#: ``message.max.bytes``, so a record that fits one backend fits the other
MAX_RECORD_BYTES = 1_048_588


def record_size(r: OutgoingRecord) -> int:
    return len(r.key) + len(r.value) + sum(len(k) + len(v) for k, v in r.headers)


def too_large(i: int, size: int) -> LogError:
    return LogError(
        f"record {i} is {size:,} bytes; the log takes records of at most "
        f"{MAX_RECORD_BYTES:,} bytes (key, value and headers)"
    )


class LogError(Exception):
    """A log backend failed; ``transient`` failures may be retried."""

    transient = False


class TransientLogError(LogError):
    transient = True


class InvalidToken(ValueError):
    """A consistency token that does not parse."""


@dataclass(frozen=True, slots=True, order=True)
class Position:
    topic: str
    partition: int
    offset: int

    def token(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"

    @classmethod
    def parse(cls, token: str) -> Position:
        topic, sep, rest = token.strip().rpartition(":")
        t2, sep2, part = topic.rpartition(":")
        if not sep or not sep2 or not t2:
            raise InvalidToken("expected <topic>:<partition>:<offset>")
        try:
            partition, offset = int(part), int(rest)
        except ValueError:
            raise InvalidToken("partition and offset must be integers") from None
        if partition < 0 or offset < 0:
            raise InvalidToken("partition and offset must be >= 0")
        return cls(t2, partition, offset)


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    key: bytes
    value: bytes
    headers: Headers = ()


class LogRecord(NamedTuple):
    """One record as read from the log (a NamedTuple: built per record, so it must be cheap)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int

    @property
    def position(self) -> Position:
        return Position(self.topic, self.partition, self.offset)


# murmur2 is pure Python (~15 µs a key), and the same keys (a user's, a title's) come
# back request after request: cached, it left the write path's profile
@lru_cache(maxsize=1 << 16)
def partition_for(key: bytes, partitions: int) -> int:
    # Kafka's Java DefaultPartitioner: toPositive(murmur2(key)) % numPartitions
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class EventLog(Protocol):
    backend: str

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        """Create missing topics (idempotent)."""

    def partitions(self, topic: str) -> int:
        """Partition count of a known topic."""

    async def append(self, topic: str, record: OutgoingRecord) -> Position:
        """Append one record; durable when it returns."""

    async def append_batch(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Position]:
        """Append many records, in order per partition; durable when it returns."""

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[LogRecord]:
        """Records of one partition from ``offset`` on, in order, at most ``max_records``."""

    async def wait(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        """True once a record at ``offset`` or later exists, False on timeout."""

    async def end_offsets(self, topic: str) -> dict[int, int]:
        """Next offset to be written, per partition."""

    async def close(self) -> None: ...


async def wait_any(log: EventLog, waits: Sequence[tuple[str, int, int]], timeout: float) -> bool:
    """Wait until any of several (topic, partition, offset) has a record."""
    if not waits:
        await asyncio.sleep(timeout)
        return False
    tasks = [asyncio.ensure_future(log.wait(t, p, o, timeout)) for t, p, o in waits]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED, timeout=timeout)
        return any(t.result() for t in done if not t.cancelled() and t.exception() is None)
    finally:
        for t in tasks:
            t.cancel()
