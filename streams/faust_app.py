"""The Faust runtime: one Faust app, agent and consumer group per projector.

Agents stay thin (decode -> pipeline -> done): the commit protocol lives in
streams/processing.py and is shared with the embedded runner. ``concurrency=1``
because higher values can commit offsets past events still in flight
(faust-streaming issue 606); ``take_events`` always gets a ``within`` so a short
batch is flushed after at most ``batch_linger_ms``. Offsets are acked when the
batch body returns, after the PostgreSQL checkpoint and the side stores, so a
worker killed mid-batch is redelivered that batch and the checkpoint skips what
was already applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

from core.settings import Settings
from projections.registry import PROJECTORS, by_name
from streams.log import LogRecord

log = logging.getLogger("mgw.faust")


def app_id(projector: str) -> str:
    """The Faust app id, which is also the Kafka consumer group."""
    return f"mgw-{projector}"


def to_records(events: Sequence[Any]) -> list[LogRecord]:
    out = []
    for e in events:
        m = e.message
        headers = m.headers or ()
        if isinstance(headers, dict):
            headers = tuple(headers.items())
        out.append(
            LogRecord(
                m.topic,
                m.partition,
                m.offset,
                m.key,
                m.value,
                tuple(headers),
                int((m.timestamp or 0) * 1000),
            )
        )
    return out


def make_app(settings: Settings, projector_name: str) -> Any:
    import faust

    projector = by_name(projector_name)
    app = faust.App(
        app_id(projector.name),
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,  # topics come from streams/topics.py specs, created by admin
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=settings.batch_size,
        stream_buffer_maxsize=settings.batch_size * 4,
        stream_wait_empty=False,
        # A crashed worker's partitions move to the others once its session expires:
        # 10 s instead of Faust's 60 s keeps that gap short.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    topic = app.topic(*projector.topics, value_serializer="raw", key_serializer="raw")
    state: dict[str, Any] = {}

    async def pipeline() -> Any:
        if "pipeline" not in state:
            state["pipeline"] = await _open_pipeline(settings, projector_name, state)
        return state["pipeline"]

    @app.agent(topic, concurrency=1, name=f"project-{projector.name}")
    async def project(stream: Any) -> None:
        within = max(settings.batch_linger_ms, 1) / 1000
        async for events in stream.take_events(settings.batch_size, within=within):
            records = to_records(events)
            # take_events acks the batch in a `finally` when this body is left, even by an
            # exception or by cancellation at shutdown, and Faust then commits the acked
            # offsets. So the batch must be fully applied before the body is left: errors
            # are retried here, and a shutdown lets the batch in flight finish first.
            work = asyncio.ensure_future(_apply_until_done(pipeline, records, projector_name))
            state["inflight"] = work
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await work
                raise

    @app.on_before_shutdown.connect
    async def _drain(app: Any, **kwargs: Any) -> None:
        # Faust stops the consumer (committing acked offsets) before this signal, but the
        # agent may still be applying a batch: let it land. The stores are deliberately
        # not closed here: the agent can pick up one more buffered batch after this point,
        # and a closed pool would fail it (its offsets are no longer committed, so it is
        # simply redelivered to the next worker). Process exit closes the connections.
        inflight = state.get("inflight")
        if inflight is not None and not inflight.done():
            await asyncio.wait({inflight}, timeout=120)

    return app


async def _apply_until_done(pipeline: Any, records: list[LogRecord], name: str) -> None:
    delay = 0.2
    while True:
        try:
            await (await pipeline()).process(records)
            return
        except Exception:
            # Never drop a batch: retry until it lands (the checkpoint makes a partly
            # applied retry harmless). Poison records never get here: the pipeline
            # dead-letters them.
            log.exception("%s: batch failed; retrying in %.1fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


async def _open_pipeline(settings: Settings, name: str, state: dict[str, Any]) -> Any:
    import redis.asyncio as aioredis

    from core.db import migrate, open_pool
    from mgw.platform import open_qdrant
    from projections.base import Stores
    from streams.kafka import KafkaLog
    from streams.processing import ProjectionPipeline
    from streams.topics import ALL_TOPICS

    assert settings.database_url and settings.redis_url and settings.kafka_bootstrap_servers
    migrate(settings.database_url)
    pool = open_pool(settings.database_url, max_size=4)
    await pool.open(wait=True)
    projector = by_name(name)
    redis = aioredis.from_url(settings.redis_url)
    # Qdrant local mode admits one process: open it only where the projector writes vectors.
    qdrant = await open_qdrant(settings, {}) if "qdrant" in projector.side_stores else None
    klog = await KafkaLog(settings.kafka_bootstrap_servers).open()  # for dead letters
    await klog.ensure_topics(ALL_TOPICS)
    stores = Stores(pg=pool, redis=redis, qdrant=qdrant)
    await projector.prepare(stores)
    return ProjectionPipeline(projector, stores, klog)


def run_worker(settings: Settings, projector_name: str) -> int:
    """Run one projector's Faust worker in this process until SIGINT/SIGTERM."""
    import faust

    from mgw.platform import resolve_services

    started: list[Any] = []
    if not settings.database_url or not settings.redis_url:
        # A worker on one machine may still use embedded PostgreSQL/Redis from the data dir.
        db, redis_url, _ = resolve_services(settings, started)
        from dataclasses import replace

        settings = replace(settings, database_url=db, redis_url=redis_url)
    _ensure_topics(settings)
    try:
        import uvloop  # measured: Faust's per-event dispatch runs about 17 % faster on it

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = make_app(settings, projector_name)
    worker = faust.Worker(app, loglevel=settings.log_level.lower(), quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        for s in started:
            s.stop()
    return 0


def _ensure_topics(settings: Settings) -> None:
    from streams.kafka import KafkaLog
    from streams.topics import ALL_TOPICS

    async def go() -> None:
        assert settings.kafka_bootstrap_servers
        klog = await KafkaLog(settings.kafka_bootstrap_servers).open()
        try:
            await klog.ensure_topics(ALL_TOPICS)
        finally:
            await klog.close()

    asyncio.run(go())


def run_workers(settings: Settings, projector_name: str | None) -> int:
    """``mgw worker``: one projector here, or one child process per projector."""
    if projector_name:
        return run_worker(settings, projector_name)
    if not settings.qdrant_url:
        log.warning(
            "QDRANT_URL is not set: Qdrant local mode admits one process, so only "
            "the catalog worker writes vectors; set QDRANT_URL for a fleet"
        )
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "mgw.cli", "worker", "--projector", p.name],
            env=os.environ.copy(),
        )
        for p in PROJECTORS
    ]

    def forward(signum: int, _frame: Any) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [c.wait() for c in children]
    return max(codes, default=0)
