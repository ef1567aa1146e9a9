"""One contract for the log port, run against the embedded and the Kafka backend."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import threading
from collections.abc import AsyncIterator

import pytest

from core.topics import TopicSpec
from streams.log import EventLog, OutgoingRecord, Position, partition_for
from tests.conftest import unique_topic

BACKENDS = ["embedded", pytest.param("kafka", marks=pytest.mark.kafka)]


@pytest.fixture(params=BACKENDS)
async def log(request: pytest.FixtureRequest, db_uri: str) -> AsyncIterator[EventLog]:
    if request.param == "embedded":
        from streams.embedded import EmbeddedLog

        backend: EventLog = await EmbeddedLog(db_uri).open()
    else:
        from streams.kafka import KafkaLog

        backend = await KafkaLog(request.getfixturevalue("kafka")).open()
    try:
        yield backend
    finally:
        await backend.close()


async def _topic(log: EventLog, partitions: int = 3) -> str:
    name = unique_topic("contract")
    await log.ensure_topics([TopicSpec(name, partitions)])
    return name


def rec(key: str, i: int) -> OutgoingRecord:
    return OutgoingRecord(key.encode(), f"v{i}".encode(), (("n", str(i).encode()),))


async def read_all(log: EventLog, topic: str, partition: int, start: int = 0) -> list:
    out = []
    offset = start
    ends = await log.end_offsets(topic)
    while offset < ends[partition]:
        batch = await log.read(topic, partition, offset, 100)
        if batch:
            out.extend(batch)
            offset = batch[-1].offset + 1
    return out


async def test_append_returns_position_in_the_key_partition(log: EventLog) -> None:
    topic = await _topic(log)
    pos = await log.append(topic, rec("user-1", 0))
    assert isinstance(pos, Position)
    assert pos.topic == topic
    assert pos.partition == partition_for(b"user-1", 3)
    assert Position.parse(pos.token()) == pos
    [got] = await log.read(topic, pos.partition, pos.offset, 10)
    assert (got.key, got.value, dict(got.headers)["n"]) == (b"user-1", b"v0", b"0")
    assert got.position == pos


async def test_reads_are_ordered_per_partition_in_batches(log: EventLog) -> None:
    topic = await _topic(log, partitions=2)
    records = [rec(f"k{i % 5}", i) for i in range(60)]
    positions = await log.append_batch(topic, records)
    for p in range(2):
        mine = [(pos, r) for pos, r in zip(positions, records, strict=True) if pos.partition == p]
        got = await read_all(log, topic, p)
        assert [g.value for g in got] == [r.value for _, r in mine]
        assert [g.offset for g in got] == sorted(pos.offset for pos, _ in mine)
    # a read from the middle starts there and respects max_records
    first = positions[0]
    mid = await log.read(topic, first.partition, first.offset + 2, 3)
    assert [m.offset for m in mid][:1] == [first.offset + 2] and len(mid) <= 3


async def test_a_record_too_large_fails_its_own_append_only(log: EventLog) -> None:
    """Appended side by side with others: the record over the limit fails its own call
    with a LogError that gives its size and the limit; the others are all appended."""
    from streams.log import MAX_RECORD_BYTES, LogError

    topic = await _topic(log, partitions=2)
    big = OutgoingRecord(b"big", b"x" * MAX_RECORD_BYTES, (("h", b"12345678901234"),))
    calls = [log.append(topic, rec(f"k{i}", i)) for i in range(20)]
    calls.insert(7, log.append(topic, big))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[7], LogError)
    assert f"{MAX_RECORD_BYTES:,} bytes" in str(results[7])
    good = [r for i, r in enumerate(results) if i != 7]
    assert all(isinstance(p, Position) for p in good)
    values = {r.value for p in range(2) for r in await read_all(log, topic, p)}
    assert values == {f"v{i}".encode() for i in range(20)}


async def test_same_key_same_partition_in_append_order(log: EventLog) -> None:
    topic = await _topic(log)
    positions = [await log.append(topic, rec("one-key", i)) for i in range(10)]
    assert len({p.partition for p in positions}) == 1
    assert [p.offset for p in positions] == sorted(p.offset for p in positions)


async def test_wait_wakes_on_append_and_times_out(log: EventLog) -> None:
    topic = await _topic(log, partitions=1)
    assert await log.wait(topic, 0, 0, 0.2) is False
    waiter = asyncio.create_task(log.wait(topic, 0, 0, 10))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    await log.append(topic, rec("k", 1))
    assert await waiter is True
    assert loop.time() - t0 < 5
    ends = await log.end_offsets(topic)
    assert ends == {0: ends[0]} and ends[0] >= 1


async def test_wait_wakes_on_an_append_by_another_client(
    log: EventLog, request: pytest.FixtureRequest, db_uri: str
) -> None:
    """The waiter's own log appends nothing: it learns of the record from the backend
    (a notification, the broker's end offsets), and a read then returns it."""
    backend = request.node.callspec.params["log"]
    bootstrap = request.getfixturevalue("kafka") if backend == "kafka" else None
    topic = await _topic(log, partitions=2)
    other = await _open(backend, db_uri, bootstrap)
    try:
        await other.ensure_topics([TopicSpec(topic, 2)])
        first = await other.append(topic, rec("k", 0))
        p = first.partition
        assert [r.value for r in await read_all(log, topic, p)] == [b"v0"]
        waiter = asyncio.create_task(log.wait(topic, p, first.offset + 1, 10))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        second = await other.append(topic, rec("k", 1))
        assert await waiter is True
        got: list = []  # type: ignore[type-arg]
        for _ in range(50):  # a consumer may need a fetch before it has the record
            if got := await log.read(topic, p, second.offset, 10):
                break
        assert [r.value for r in got][:1] == [b"v1"]
    finally:
        await other.close()


async def test_end_offsets_count_appends(log: EventLog) -> None:
    topic = await _topic(log, partitions=2)
    before = await log.end_offsets(topic)
    positions = await log.append_batch(topic, [rec(f"k{i}", i) for i in range(20)])
    after = await log.end_offsets(topic)
    for p in range(2):
        n = sum(1 for pos in positions if pos.partition == p)
        assert after[p] - before[p] == n


async def _open(backend: str, db_uri: str, bootstrap: str | None) -> EventLog:
    if backend == "embedded":
        from streams.embedded import EmbeddedLog

        return await EmbeddedLog(db_uri).open()
    from streams.kafka import KafkaLog

    assert bootstrap
    return await KafkaLog(bootstrap).open()


async def test_concurrent_appenders_never_make_a_reader_skip(
    log: EventLog, request: pytest.FixtureRequest, db_uri: str
) -> None:
    """Appenders in several threads, each with its own connections and event loop, race a
    reader that follows the head; the reader must get every record exactly once, and one
    key's records in append order."""
    backend = request.node.callspec.params["log"]
    bootstrap = request.getfixturevalue("kafka") if backend == "kafka" else None
    topic = await _topic(log, partitions=2)
    per_writer, writers = 40, 4
    seen: list[bytes] = []
    done = asyncio.Event()

    async def follow() -> None:
        offsets = {0: 0, 1: 0}
        while True:
            progressed = False
            for p in (0, 1):
                for r in await log.read(topic, p, offsets[p], 50):
                    assert r.offset >= offsets[p]
                    seen.append(r.value)
                    offsets[p] = r.offset + 1
                    progressed = True
            if done.is_set() and not progressed:
                ends = await log.end_offsets(topic)
                if all(offsets[p] >= ends[p] for p in (0, 1)):
                    return
            if not progressed:
                await asyncio.sleep(0.005)

    def writer(w: int) -> None:
        async def go() -> None:
            own = await _open(backend, db_uri, bootstrap)
            try:
                await own.ensure_topics([TopicSpec(topic, 2)])
                for i in range(per_writer):
                    await own.append(topic, rec(f"w{w}-{i % 3}", w * 1000 + i))
            finally:
                await own.close()

        asyncio.run(go())

    reader = asyncio.create_task(follow())
    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    await asyncio.gather(*(asyncio.to_thread(t.join) for t in threads))
    done.set()
    await asyncio.wait_for(reader, 60)
    assert len(seen) == len(set(seen)) == per_writer * writers
    numbers = [int(v[1:]) for v in seen]
    for w in range(writers):
        for k in range(3):
            mine = [n for n in numbers if n // 1000 == w and n % 1000 % 3 == k]
            assert mine == sorted(mine), "one key's records came out of append order"


def _append_process(db_uri: str, topic: str, worker: int, n: int) -> None:
    from streams.embedded import EmbeddedLog

    async def go() -> None:
        log = await EmbeddedLog(db_uri).open()
        try:
            await log.ensure_topics([TopicSpec(topic, 2)])
            for i in range(n):
                await log.append(topic, rec(f"p{worker}-{i % 4}", worker * 10000 + i))
        finally:
            await log.close()

    asyncio.run(go())


async def test_embedded_offsets_dense_with_two_processes(db_uri: str) -> None:
    """Two OS processes append while this one reads: offsets stay dense and a reader
    that follows the head never skips a record that commits later."""
    from streams.embedded import EmbeddedLog

    log = await EmbeddedLog(db_uri).open()
    topic = unique_topic("dense")
    await log.ensure_topics([TopicSpec(topic, 2)])
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append_process, args=(db_uri, topic, w, 150)) for w in range(2)]
    for p in procs:
        p.start()
    offsets, seen = {0: 0, 1: 0}, []
    try:
        while any(p.is_alive() for p in procs) or any(
            offsets[p] < e for p, e in (await log.end_offsets(topic)).items()
        ):
            for part in (0, 1):
                for r in await log.read(topic, part, offsets[part], 100):
                    assert r.offset == offsets[part], "a reader skipped an offset"
                    offsets[part] += 1
                    seen.append(r.value)
            await asyncio.sleep(0.002)
    finally:
        for p in procs:
            p.join(60)
        await log.close()
    assert all(p.exitcode == 0 for p in procs)
    assert len(seen) == len(set(seen)) == 300
