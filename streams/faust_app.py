"""The Faust runtime: one Faust app and consumer group per projector.

Faust keeps what it is good at: the consumer group (joins, rebalances, the session
and heartbeats), its consumer thread that fetches from the brokers, and the worker's
life cycle. Records, though, reach the projector a whole fetch at a time: the
consumer's drain loop (what hands each fetched record to the agents' streams) is
replaced by ``batch_drain``, which takes what one ``getmany`` returned (up to
``batch_size`` records), applies it through the commit protocol shared with the
other runtimes (streams/processing.py), and only then commits the Kafka offsets.

Why not the agent's ``stream.take_events``: Faust dispatches every record on its own
(two tasks per record in the drain loop, a queue put and get per stream, an ack per
event). Measured with py-spy in bench/projection_throughput.py, that machinery cost
about 80 µs per event, more than the whole projection: Faust ran at 4,500 events/s
while the same pipeline under confluent-kafka ran at 24,000. The agent is still
declared (it is what subscribes the app to the projector's topics) and still applies
batches through ``take_events`` should records ever reach it.

A worker killed mid-batch has committed no offsets for it: the batch is redelivered
and the PostgreSQL checkpoint skips what was already applied.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from core.settings import Settings
from projections.registry import by_name
from streams.log import LogRecord
from streams.processing import Decoded, ProjectionPipeline, apply_until_done

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


def from_consumer_records(fetched: Any, active: Any) -> list[LogRecord]:
    """What one aiokafka ``getmany`` returned (partition -> ConsumerRecords, timestamps
    in ms), as log records, partition by partition; ``active`` (None: all) are the
    partitions Faust is reading now (it pauses the others while rebalancing)."""
    out: list[LogRecord] = []
    for tp, records in fetched.items():
        if active is not None and tp not in active:
            continue
        out.extend(
            LogRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers or ()),
                      r.timestamp or 0)
            for r in records
        )  # fmt: skip
    return out


async def batch_drain(
    consumer: Any,
    fetcher: Any,
    apply: Callable[[list[LogRecord], Decoded | None], Awaitable[None]],
    decode: Callable[[list[LogRecord]], Awaitable[Decoded | None]] | None = None,
) -> None:
    """Faust's consumer drain loop, a fetch at a time: ``apply`` lands the batch (its
    PostgreSQL transaction holds the checkpoint), then the next offsets are committed.
    Faust's own commits find nothing acked and commit nothing, so no offset is ever
    committed ahead of what the projection holds.

    While one batch is in its transaction the next is fetched and ``decode``d (Python
    work, overlapping PostgreSQL's part on the other core); it is applied only once the
    one before has landed and its offsets are committed."""
    inflight: asyncio.Future[None] | None = None
    landing: dict[Any, int] = {}
    while not (consumer.should_stop or fetcher.should_stop):
        fetched, active = await consumer._wait_next_records(1.0)
        records = from_consumer_records(fetched, active) if fetched else []
        decoded = await decode(records) if records and decode is not None else None
        if inflight is not None:
            await _land(consumer, inflight, landing)
            inflight = None
        if not records or consumer.should_stop:
            continue
        inflight = asyncio.ensure_future(apply(records, decoded))
        landing = {}
        for tp, batch in fetched.items():
            if batch and (active is None or tp in active):
                landing[tp] = batch[-1].offset + 1
    if inflight is not None:
        await _land(consumer, inflight, landing)


async def _land(consumer: Any, inflight: asyncio.Future[None], nxt: dict[Any, int]) -> None:
    """Wait for a batch's transaction, then commit its next offsets. (Cancelled meanwhile,
    the batch still lands: ``apply`` shields it, and its offsets stay uncommitted.) A
    commit refused because the group rebalanced loses nothing: the new owner reads these
    records again and the checkpoint skips them."""
    await inflight
    await consumer._commit(nxt)


def make_app(
    settings: Settings, projector_name: str, open_pipeline: Callable[[], Awaitable[Any]]
) -> Any:
    """The Faust app of one projector; ``open_pipeline`` builds its ProjectionPipeline
    inside the worker's event loop, on first use."""
    import faust

    projector = by_name(projector_name)
    datadir = settings.data_dir / "faust" / app_id(projector.name)
    datadir.mkdir(parents=True, exist_ok=True)  # Faust makes only its own folder in it
    app = faust.App(
        app_id(projector.name),
        broker=f"kafka://{settings.kafka_bootstrap_servers}",
        value_serializer="raw",
        key_serializer="raw",
        store="memory://",
        # Faust's default state dir is "<app id>-data" in the working directory: one empty
        # tree per projector wherever a worker was started. It belongs with the rest.
        datadir=str(datadir),
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

    async def pipeline() -> ProjectionPipeline:
        if "pipeline" not in state:
            state["pipeline"] = await open_pipeline()
        opened: ProjectionPipeline = state["pipeline"]
        return opened

    async def apply_batch(records: list[LogRecord], decoded: Decoded | None = None) -> None:
        # A shutdown or rebalance cancels the drain loop: the batch in flight lands first
        # (its offsets are then left uncommitted, and the checkpoint covers the redo).
        work = asyncio.ensure_future(
            apply_until_done(pipeline, records, projector_name, decoded=decoded)
        )
        state["inflight"] = work
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            await work
            raise

    consumer: Any = app.consumer

    async def decode(records: list[LogRecord]) -> Decoded | None:
        try:
            return (await pipeline()).decode(records)
        except Exception:  # the stores not open yet: the apply decodes, and retries
            return None

    async def drain(fetcher: Any) -> None:
        await batch_drain(consumer, fetcher, apply_batch, decode)

    consumer._drain_messages = drain  # the Fetcher service runs this loop

    @app.agent(topic, concurrency=1, name=f"project-{projector.name}")
    async def project(stream: Any) -> None:
        within = max(settings.batch_linger_ms, 1) / 1000
        async for events in stream.take_events(settings.batch_size, within=within):
            # take_events acks the batch in a `finally` when this body is left, even by an
            # exception or by cancellation at shutdown, and Faust then commits the acked
            # offsets: apply_batch lands the batch before it returns or raises.
            await apply_batch(to_records(events))

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
