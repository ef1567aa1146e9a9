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
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from core.settings import Settings
from projections.registry import by_name
from streams.log import LogRecord
from streams.processing import apply_until_done

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


def make_app(
    settings: Settings, projector_name: str, open_pipeline: Callable[[], Awaitable[Any]]
) -> Any:
    """The Faust app of one projector; ``open_pipeline`` builds its ProjectionPipeline
    inside the worker's event loop, on first use."""
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
        topic_allow_declare=False,  # topics come from core/topics.py specs, created by admin
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
            state["pipeline"] = await open_pipeline()
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
            work = asyncio.ensure_future(apply_until_done(pipeline, records, projector_name))
            state["inflight"] = work
            try:
                await asyncio.shield(work)
            except asyncio.CancelledError:
                await work
                raise

    @app.task  # type: ignore[untyped-decorator]
    async def open_at_start() -> None:
        # a worker is ready (mgw/probe.py) once its stores and log are open: open them now,
        # not at the first record; if this fails, the first batch tries again
        try:
            await pipeline()
        except Exception:
            log.exception(
                "%s: could not open the stores yet; retrying at the first batch", projector.name
            )

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's stub wants signal=
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
