"""The Kafka log backend (confluent-kafka / librdkafka).

Appends go through one idempotent producer (``acks=all``) to an explicit
partition, so both backends put a key in the same partition. Reads for the
in-process runner and for tests use plain assigned consumers (no group); the
scalable path is the Faust worker (streams/faust_app.py), whose consumer groups
commit offsets in Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
    OffsetSpec,
)

from core.topics import ALL_TOPICS, TopicSpec
from streams.log import (
    MAX_RECORD_BYTES,
    LogError,
    LogRecord,
    OutgoingRecord,
    Position,
    TransientLogError,
    partition_for,
    record_size,
    too_large,
)

#: how long an append waits for the broker's acknowledgement before it fails
DELIVERY_TIMEOUT_MS = 5000
#: how often the end offsets of the partitions someone waits on are asked for, while
#: anyone waits (appends by this process are seen at once, without asking)
WATCH_INTERVAL_S = 0.02
#: for this long after the broker said where a partition ends, a read from there is
#: answered "nothing yet" without asking (KafkaLog.read)
FRESH_S = 0.1


#: delivery errors that mean "the broker could not be reached in time", which librdkafka
#: does not flag retriable (it has given up on the message itself): the append failed
#: for now, so the API answers 503 and a projector retries its batch
_UNREACHABLE = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
    }
)


def producer_config(bootstrap: str) -> dict[str, Any]:
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,  # no duplicates or reordering on producer retries
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10000,
        "compression.type": "lz4",
        "client.id": "mgw-producer",
        # An append the broker has not acknowledged within this long fails (retriable:
        # the API answers 503 with Retry-After, a projector retries its batch) instead of
        # waiting out librdkafka's default of 300 s: with the broker down, every write
        # request hung past any client's timeout (found by `mgw chaos restart-broker`).
        # Like PostgreSQL's pool timeout, five seconds; the outcome of a write that timed
        # out is unknown to its caller, as with any lost answer (the library's
        # Idempotency-Key makes its retry safe).
        "message.timeout.ms": DELIVERY_TIMEOUT_MS,
    }


def record_of(m: Any) -> LogRecord:
    """A consumed confluent-kafka message as a LogRecord. ``Any``: the stubs type every field
    of a message as optional, and a message that was consumed without error has them all."""
    _, ts = m.timestamp()
    return LogRecord(
        m.topic(), m.partition(), m.offset(), m.key(), m.value(), tuple(m.headers() or ()), ts
    )


class KafkaLog:
    backend = "kafka"

    def __init__(self, bootstrap: str, *, replication_factor: int = 1) -> None:
        self.bootstrap = bootstrap
        self.replication_factor = replication_factor
        self._producer: Producer | None = None
        self._admin: AdminClient | None = None
        self._partitions: dict[str, int] = {}
        self._readers: dict[tuple[str, int], tuple[Consumer, int]] = {}
        self._reader_locks: dict[tuple[str, int], asyncio.Lock] = {}
        self._meta: Consumer | None = None
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="mgw-kafka")
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        # deliveries reported on the polling thread, answered on the event loop (_drain)
        self._done: deque[tuple[asyncio.Future[Position], Position | Exception]] = deque()
        self._draining = False
        # The end offset of each partition as last known (this process's own deliveries,
        # and the watcher's answers), the waiters of each, and the task asking the broker
        # for the ends of every partition waited on, in one request, while anyone waits.
        # (Each waiter asking for its own partition every 10-200 ms was hundreds of
        # requests a second from the in-process runner of `mgw up`.)
        self._heads: dict[tuple[str, int], int] = {}
        #: when the broker last told us a partition's end (monotonic seconds)
        self._confirmed: dict[tuple[str, int], float] = {}
        self._changed: dict[tuple[str, int], asyncio.Event] = {}
        self._waiting: Counter[tuple[str, int]] = Counter()
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> KafkaLog:
        self._producer = Producer(producer_config(self.bootstrap))
        self._admin = AdminClient({"bootstrap.servers": self.bootstrap})
        self._meta = Consumer(self._consumer_config())
        # Delivery reports are served by poll(); a thread keeps polling so appends resolve.
        self._poller = threading.Thread(target=self._poll_loop, name="mgw-kafka-poll", daemon=True)
        self._poller.start()
        return self

    def _poll_loop(self) -> None:
        producer = self._producer
        assert producer is not None
        while not self._stop.is_set():
            producer.poll(0.05)

    def _consumer_config(self) -> dict[str, Any]:
        return {
            "bootstrap.servers": self.bootstrap,
            "group.id": f"mgw-reader-{uuid.uuid4().hex[:8]}",  # never commits: assign() only
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.wait.max.ms": 50,
        }

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
        loop = asyncio.get_running_loop()
        if self._producer is not None:
            await loop.run_in_executor(self._pool, self._producer.flush, 10)
        self._stop.set()
        if self._poller:
            self._poller.join(2)
        # dropped, not kept: librdkafka handles live (and reconnect, and log) until their
        # Python objects go, and a closed log may stay referenced for long
        self._producer = None
        self._admin = None
        for consumer, _ in self._readers.values():
            with contextlib.suppress(Exception):
                consumer.close()
        if self._meta is not None:
            with contextlib.suppress(Exception):
                self._meta.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        assert self._admin is not None
        existing = (await self._run(self._admin.list_topics, None, 10)).topics
        new = [
            NewTopic(
                s.name,
                num_partitions=s.partitions,
                replication_factor=self.replication_factor,
                config={"retention.ms": str(s.retention_ms)},
            )
            for s in specs
            if s.name not in existing
        ]
        if new:
            for topic, fut in self._admin.create_topics(new, operation_timeout=10).items():
                try:
                    await asyncio.wrap_future(fut)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise LogError(f"cannot create topic {topic}: {exc}") from exc
        meta = await self._run(self._wait_for_leaders, [s.name for s in specs])
        for s in specs:
            got = len(meta[s.name].partitions) if s.name in meta else 0
            if got and got != s.partitions:
                raise LogError(
                    f"topic {s.name} exists with {got} partitions, spec says {s.partitions}"
                )
            self._partitions[s.name] = got or s.partitions

    def _wait_for_leaders(self, names: list[str], timeout: float = 15.0) -> Any:
        """Metadata once every partition of ``names`` has a leader: a topic just created
        answers NOT_LEADER_FOR_PARTITION for a moment otherwise."""
        assert self._admin is not None
        deadline = time.monotonic() + timeout
        while True:
            topics = self._admin.list_topics(None, 10).topics
            ready = all(
                n in topics
                and topics[n].error is None
                and all(p.leader >= 0 for p in topics[n].partitions.values())
                for n in names
            )
            if ready or time.monotonic() > deadline:
                return topics
            time.sleep(0.05)

    def partitions(self, topic: str) -> int:
        n = self._partitions.get(topic)
        if n is None:
            known = {t.name: t.partitions for t in ALL_TOPICS}
            if topic not in known:
                raise LogError(f"unknown topic {topic!r}: create it with ensure_topics")
            n = self._partitions[topic] = known[topic]
        return n

    async def append(self, topic: str, record: OutgoingRecord) -> Position:
        return (await self.append_batch(topic, (record,)))[0]

    async def append_batch(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Position]:
        assert self._producer is not None
        for i, r in enumerate(records):  # refused before any is sent: nothing half-done
            if (size := record_size(r)) > MAX_RECORD_BYTES:
                raise too_large(i, size)
        loop = asyncio.get_running_loop()
        n = self.partitions(topic)
        futures: list[asyncio.Future[Position]] = []
        done = self._done

        def deliver(fut: asyncio.Future[Position]) -> Any:
            # Runs on the polling thread: the answer is queued, and the event loop is
            # woken once for everything queued until it drains (not once per record).
            def cb(err: KafkaError | None, msg: Any) -> None:
                if err is not None:
                    transient = err.retriable() or err.code() in _UNREACHABLE
                    exc: Exception = (TransientLogError if transient else LogError)(
                        f"append to {topic} failed: {err}"
                    )
                    done.append((fut, exc))
                else:
                    done.append((fut, Position(msg.topic(), msg.partition(), msg.offset())))
                if not self._draining:
                    self._draining = True
                    loop.call_soon_threadsafe(self._drain)

            return cb

        for r in records:
            fut: asyncio.Future[Position] = loop.create_future()
            futures.append(fut)
            while True:
                try:
                    self._producer.produce(
                        topic,
                        value=r.value,
                        key=r.key,
                        partition=partition_for(r.key, n),
                        headers=list(r.headers),
                        on_delivery=deliver(fut),
                    )
                    break
                except BufferError:  # local queue full: let deliveries drain
                    await asyncio.sleep(0.01)
        return list(await asyncio.gather(*futures))

    def _drain(self) -> None:
        """On the event loop: answer every delivery queued so far."""
        self._draining = False  # first: a delivery queued from here on schedules another
        done = self._done
        while done:
            fut, result = done.popleft()
            if isinstance(result, Position):
                self._delivered(fut, result)
            elif not fut.done():
                fut.set_exception(result)

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[LogRecord]:
        key = (topic, partition)
        if (
            self._heads.get(key, offset + 1) <= offset
            and time.monotonic() - self._confirmed.get(key, -FRESH_S) < FRESH_S
        ):
            # The broker said a moment ago that nothing is there: answer as a consume()
            # that found nothing would, without a thread and without waiting out its
            # timeout (the runner reads every partition of a topic in turn); a caller
            # that then waits is woken when the end moves (wait).
            return []
        lock = self._reader_locks.setdefault(key, asyncio.Lock())
        async with lock:
            records: list[LogRecord] = await self._run(
                self._read_sync, topic, partition, offset, max_records
            )
            return records

    def _read_sync(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[LogRecord]:
        key = (topic, partition)
        entry = self._readers.get(key)
        if entry is None:
            consumer = Consumer(self._consumer_config())
            consumer.assign([TopicPartition(topic, partition, offset)])
            entry = (consumer, offset)
        consumer, expected = entry
        if expected != offset:
            consumer.seek(TopicPartition(topic, partition, offset))
        out: list[LogRecord] = []
        msgs = consumer.consume(num_messages=max_records, timeout=0.1)
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF or err.retriable():
                    continue  # librdkafka recovers by itself; the caller reads again
                raise LogError(str(err))
            record = record_of(m)
            if record.offset >= offset:
                out.append(record)
        nxt = out[-1].offset + 1 if out else offset
        self._readers[key] = (consumer, nxt)
        return out

    async def end_offsets(self, topic: str) -> dict[int, int]:
        n = self.partitions(topic)
        ends = dict(await self._run(self._end_offsets_sync, topic, n))
        self._confirm({(topic, p): e for p, e in ends.items()})
        return ends

    def _end_offsets_sync(self, topic: str, n: int) -> list[tuple[int, int]]:
        return [(p, self._high_watermark(topic, p)) for p in range(n)]

    def _high_watermark(self, topic: str, partition: int) -> int:
        assert self._meta is not None
        deadline = time.monotonic() + 10
        while True:
            try:
                tp = TopicPartition(topic, partition)
                return int(self._meta.get_watermark_offsets(tp, timeout=5, cached=False)[1])
            except KafkaException as exc:
                # leadership moving (a new topic, a restarted broker): ask again shortly
                if not exc.args[0].retriable() and exc.args[0].code() not in _LEADER_MOVING:
                    raise LogError(f"offsets of {topic}[{partition}]: {exc}") from exc
                if time.monotonic() > deadline:
                    raise TransientLogError(f"offsets of {topic}[{partition}]: {exc}") from exc
                time.sleep(0.05)

    async def wait(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        key = (topic, partition)
        if self._heads.get(key, 0) > offset:
            return True
        changed = self._changed.setdefault(key, asyncio.Event())
        self._waiting[key] += 1
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch(), name="mgw-kafka-watch")
        try:
            async with asyncio.timeout(timeout):
                while self._heads.get(key, 0) <= offset:
                    await changed.wait()
                    changed = self._changed.setdefault(key, asyncio.Event())
        except TimeoutError:
            return False
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:
                del self._waiting[key]
        return True

    def _advance(self, key: tuple[str, int], head: int) -> None:
        if head > self._heads.get(key, 0):
            self._heads[key] = head
            woken = self._changed.pop(key, None)
            if woken is not None:
                woken.set()

    def _confirm(self, ends: dict[tuple[str, int], int]) -> None:
        now = time.monotonic()
        for key, head in ends.items():
            self._confirmed[key] = now
            self._advance(key, head)

    def _delivered(self, fut: asyncio.Future[Position], pos: Position) -> None:
        self._advance((pos.topic, pos.partition), pos.offset + 1)
        if not fut.done():
            fut.set_result(pos)

    async def _watch(self) -> None:
        """While anyone waits: the end offsets of every partition waited on, in one
        ListOffsets request, every WATCH_INTERVAL_S; appends by other processes are seen
        this way (this process's own as they are delivered)."""
        while self._waiting:
            keys = list(self._waiting)
            try:
                ends = await self._run(self._list_ends, keys)
            except Exception:  # noqa: BLE001 - waiters time out and ask again
                ends = {}
            self._confirm(ends)
            await asyncio.sleep(WATCH_INTERVAL_S)

    def _list_ends(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        assert self._admin is not None
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        asked = {TopicPartition(t, p): latest for t, p in keys}
        out: dict[tuple[str, int], int] = {}
        for tp, fut in self._admin.list_offsets(asked, request_timeout=5).items():
            with contextlib.suppress(KafkaException):
                out[(tp.topic, tp.partition)] = int(fut.result().offset)
        return out


_LEADER_MOVING = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
}
