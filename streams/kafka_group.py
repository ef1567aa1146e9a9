"""A Kafka consumer-group runtime on confluent-kafka (librdkafka), beside Faust.

Same projectors, same commit protocol (streams/processing.py), same consumer group
name (``mgw-<projector>``) as the Faust runtime, so committed offsets carry over when
switching. Why a second runtime: Faust dispatches every message through its own
per-event machinery (tasks, queues, per-event acks), which caps one worker near
14,000 events/s on this machine even with an empty agent, while librdkafka hands over
batches from C. Faust stays the default runtime the design card names;
``mgw worker --runtime confluent`` is the one for bulk catch-up and heavy topics.

Resume positions come from PostgreSQL: when partitions are assigned, each starts at
the projector's watermark (everything below it is fully applied), and only without a
watermark at the group's committed offset. Kafka commits after each batch are for
monitoring and lag tools; correctness does not depend on them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
from confluent_kafka import OFFSET_STORED, Consumer, KafkaError, TopicPartition

from core.settings import Settings
from projections.registry import by_name
from streams.kafka import record_of
from streams.log import LogRecord
from streams.processing import ProjectionPipeline, apply_until_done

log = logging.getLogger("mgw.kafka_group")


def consumer_config(settings: Settings, group: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 3000,
        "max.poll.interval.ms": 300000,
        "fetch.wait.max.ms": 50,
        "queued.min.messages": max(100000, settings.batch_size * 4),
        "partition.assignment.strategy": "range",
        "client.id": f"{group}-worker",
    }


class GroupWorker:
    def __init__(self, settings: Settings, projector_name: str) -> None:
        from streams.faust_app import app_id

        self.settings = settings
        self.projector = by_name(projector_name)
        self.group = app_id(self.projector.name)
        self.consumer = Consumer(consumer_config(settings, self.group))
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mgw-consume")
        self._stop = threading.Event()

    def _watermarks(self) -> dict[tuple[str, int], int]:
        assert self.settings.database_url
        with psycopg.connect(self.settings.database_url) as conn:
            rows = conn.execute(
                "SELECT topic, partition, next_offset FROM projection_watermarks"
                " WHERE projector = %s",
                (self.projector.name,),
            ).fetchall()
        return {(t, p): o for t, p, o in rows}

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        marks = self._watermarks()
        for tp in partitions:
            tp.offset = marks.get((tp.topic, tp.partition), OFFSET_STORED)
        log.info(
            "%s: assigned %s",
            self.group,
            ", ".join(
                f"{tp.topic}[{tp.partition}]@"
                + ("committed" if tp.offset == OFFSET_STORED else f"watermark {tp.offset}")
                for tp in partitions
            ),
        )
        consumer.assign(partitions)

    def _consume(self) -> list[LogRecord]:
        msgs = self.consumer.consume(
            num_messages=self.settings.batch_size,
            timeout=max(self.settings.batch_linger_ms, 50) / 1000,
        )
        out: list[LogRecord] = []
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("%s: consume error %s", self.group, err)
                continue
            out.append(record_of(m))
        return out

    async def run(self, pipeline: ProjectionPipeline) -> None:
        """Batch after batch, each committed to Kafka once its transaction has landed.
        While one batch is in its transaction the next is fetched and decoded: decoding
        is Python work, and PostgreSQL's part of the batch runs on the other core."""
        loop = asyncio.get_running_loop()
        self.consumer.subscribe(list(self.projector.topics), on_assign=self._on_assign)
        pending = loop.run_in_executor(self._pool, self._consume)
        inflight: asyncio.Future[None] | None = None
        landing: list[LogRecord] = []
        try:
            while True:
                records = await pending
                if self._stop.is_set():
                    break  # not applied, not committed: the next owner starts here
                # librdkafka fetches the next batch while this one is applied
                pending = loop.run_in_executor(self._pool, self._consume)
                decoded = pipeline.decode(records) if records else None
                if inflight is not None:
                    await inflight
                    self._commit(landing)
                    inflight = None
                if not records:
                    continue
                inflight = asyncio.ensure_future(
                    apply_until_done(_ready(pipeline), records, self.group, decoded=decoded)
                )
                landing = records
            if inflight is not None:  # stopping: the batch in flight lands and commits
                await inflight
                self._commit(landing)
                inflight = None
        finally:
            if inflight is not None and not inflight.done():
                inflight.cancel()  # rolled back: redelivered to the next owner
                await asyncio.gather(inflight, return_exceptions=True)
            await loop.run_in_executor(self._pool, self.consumer.close)
            self._pool.shutdown(wait=False)

    def _commit(self, records: list[LogRecord]) -> None:
        offsets: dict[tuple[str, int], int] = {}
        for r in records:
            offsets[(r.topic, r.partition)] = r.offset + 1
        self.consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=True,
        )

    def stop(self) -> None:
        self._stop.set()


def _ready(pipeline: ProjectionPipeline) -> Callable[[], Awaitable[ProjectionPipeline]]:
    async def get() -> ProjectionPipeline:
        return pipeline

    return get
