"""Projectors under the shared pipeline: idempotence, ordering, dead letters, crashes."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.codec import default_codec
from core.events import headers_dict
from core.topics import CATALOG, PLAYBACK
from projections import maintenance
from projections.base import Stores
from projections.catalog import CatalogProjector
from projections.playback import PlaybackProjector, continue_watching
from streams.embedded import EmbeddedLog
from streams.log import OutgoingRecord
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import EmbeddedRunner, ProjectorLoop, lane_shards
from tests.helpers import content, play

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
async def elog(db_uri: str) -> AsyncIterator[EmbeddedLog]:
    log = await EmbeddedLog(db_uri).open()
    yield log
    await log.close()


async def _count(stores: Stores) -> tuple[int, int]:
    async with stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*), coalesce(sum(event_count), 0) FROM playback_positions"
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _read_everything(log: EmbeddedLog, topic: str) -> list:
    out = []
    for p in range(log.partitions(topic)):
        out += await log.read(topic, p, 0, 100000)
    return out


async def test_same_batch_twice_leaves_the_same_state(elog: EmbeddedLog, stores: Stores) -> None:
    pub = Publisher(elog)
    events = [play(f"u{i % 7}", f"c{i % 11}", 300 + i * 10, seconds=i) for i in range(200)]
    await pub.publish_many(events)
    records = await _read_everything(elog, PLAYBACK.name)
    pipeline = ProjectionPipeline(PlaybackProjector(), stores, elog)

    first = await pipeline.process(records)
    sum1 = await maintenance.checksum(stores, pipeline.projector)
    second = await pipeline.process(records)
    sum2 = await maintenance.checksum(stores, pipeline.projector)

    assert (first.applied, first.skipped) == (200, 0)
    assert (second.applied, second.skipped) == (0, 200)
    assert sum1 == sum2
    assert await _count(stores) == (len({(e.key, e.payload["content_id"]) for e in events}), 200)


async def test_late_event_from_another_device_does_not_move_position_back(
    elog: EmbeddedLog, stores: Stores
) -> None:
    pub = Publisher(elog)
    await pub.publish(play("u1", "c1", 3000, seconds=100, device="tv"))
    await pub.publish(play("u1", "c1", 600, seconds=50, device="phone"))  # older, synced late
    loop = ProjectorLoop(ProjectionPipeline(PlaybackProjector(), stores, elog), elog, linger_ms=0)
    await loop.catch_up()
    items, _ = await continue_watching(stores.redis, stores.pg, "u1")
    assert [(i.content_id, i.position_s) for i in items] == [("c1", 3000.0)]
    assert await _count(stores) == (1, 2)


async def test_continue_watching_follows_thresholds_newest_first(
    elog: EmbeddedLog, stores: Stores
) -> None:
    pub = Publisher(elog)
    loop = ProjectorLoop(ProjectionPipeline(PlaybackProjector(), stores, elog), elog, linger_ms=0)
    await pub.publish_many(
        [
            play("u1", "a", 1000, seconds=1),  # 16.7 %: in progress
            play("u1", "b", 100, seconds=2),  # 1.7 %: not started
            play("u1", "c", 3000, seconds=3),  # 50 %: in progress, newest
            play("u1", "d", 3000, None, seconds=4),  # duration unknown: not offered
            play("u2", "a", 3000, seconds=5),  # someone else
        ]
    )
    await loop.catch_up()
    items, nxt = await continue_watching(stores.redis, stores.pg, "u1")
    assert [i.content_id for i in items] == ["c", "a"] and nxt is None
    await pub.publish(play("u1", "c", 5900, seconds=10, kind="PlaybackStopped"))  # 98 %: watched
    await loop.catch_up()
    items, _ = await continue_watching(stores.redis, stores.pg, "u1")
    assert [i.content_id for i in items] == ["a"]
    # pagination walks every item once
    await pub.publish_many([play("u3", f"m{i}", 1000, seconds=20 + i) for i in range(7)])
    await loop.catch_up()
    seen, cursor = [], None
    while True:
        page, cursor = await continue_watching(
            stores.redis, stores.pg, "u3", limit=3, before=cursor
        )
        seen += [i.content_id for i in page]
        if cursor is None:
            break
    assert seen == [f"m{i}" for i in reversed(range(7))]


async def test_poison_records_go_to_the_dead_letter_topic(
    elog: EmbeddedLog, stores: Stores
) -> None:
    codec = default_codec()
    good = play("u1", "c1", 1200)
    rejected = play("u1", "c2", 9000, 100)  # position far past duration
    garbage = OutgoingRecord(b"u1", b"\x00garbage\xff", (("event_type", b"?"),))
    unknown = OutgoingRecord(b"u1", b"\xc3\x01" + b"\x11" * 8 + b"body", ())
    pub = Publisher(elog)
    await elog.append(PLAYBACK.name, garbage)
    await elog.append(PLAYBACK.name, unknown)
    await elog.append(
        PLAYBACK.name,
        OutgoingRecord(
            b"u1", codec.encode(rejected.event_type, rejected.payload), rejected.headers()
        ),
    )
    await pub.publish(good)
    loop = ProjectorLoop(ProjectionPipeline(PlaybackProjector(), stores, elog), elog, linger_ms=0)
    await loop.catch_up()

    assert await _count(stores) == (1, 1)
    dlq = await _read_everything(elog, f"{PLAYBACK.name}.dlq")
    reasons = sorted(headers_dict(r.headers)["dlq_reason"] for r in dlq)
    assert reasons == ["decode", "decode", "rejected"]
    for r in dlq:
        h = headers_dict(r.headers)
        assert h["dlq_projector"] == "playback" and h["dlq_topic"] == PLAYBACK.name
        assert h["dlq_error"] and int(h["dlq_offset"]) >= 0
    assert {bytes(r.value) for r in dlq} >= {garbage.value, unknown.value}
    lag = await loop.lag()
    assert lag == {PLAYBACK.name: 0}
    # processing the same records again sends nothing twice
    await loop.pipeline.process(await _read_everything(elog, PLAYBACK.name))
    assert len(await _read_everything(elog, f"{PLAYBACK.name}.dlq")) == 3


async def test_catalog_writes_rows_and_the_search_projector_follows(
    elog: EmbeddedLog, stores: Stores, tmp_path: Path
) -> None:
    from core.embedding import shared_embedder
    from domain.discovery.filters import SearchFilters
    from projections.search_index import SearchProjector, SearchSetup, UpstreamBehind
    from projections.search_vector_stores import EdgeVectorStore

    pub = Publisher(elog)
    await pub.publish_many(
        [
            content("c1", "Toy Story", genres=["Animation", "Comedy", "animation"],
                    overview="Toys come alive when nobody watches."),
            content("c2", "Heat", genres=["Crime"], overview="A cop hunts a master thief."),
            content("c1", "Toy Story", year=1996, genres=["Animation"],
                    overview="Toys come alive when nobody watches."),  # later upsert wins
            content("c3", "  "),  # rejected: empty title
        ]
    )  # fmt: skip
    vectors = EdgeVectorStore(tmp_path / "vectors")
    stores.search = SearchSetup(
        vectors=vectors, embedder=shared_embedder, cache_path=tmp_path / "cache.sqlite"
    )
    search = SearchProjector()
    search.upstream_wait_s = 0.2
    await search.prepare(stores)
    search_loop = ProjectorLoop(ProjectionPipeline(search, stores, elog), elog, linger_ms=0)
    # the documents are read from the catalog's tables: ahead of the catalog, it waits
    with pytest.raises(UpstreamBehind):
        await search_loop.catch_up()

    proj = CatalogProjector()
    await proj.prepare(stores)
    loop = ProjectorLoop(ProjectionPipeline(proj, stores, elog), elog, linger_ms=0)
    await loop.catch_up()
    async with stores.pg.connection() as conn:
        rows = await (
            await conn.execute("SELECT content_id, year, genres FROM content ORDER BY 1")
        ).fetchall()
        queued = await (await conn.execute("SELECT content_id FROM search_queue")).fetchall()
    assert rows == [("c1", 1996, ["Animation"]), ("c2", 1995, ["Crime"])]
    assert sorted(r[0] for r in queued) == ["c1", "c2"]  # queued in the projector's transaction
    dlq = await _read_everything(elog, f"{CATALOG.name}.dlq")
    assert [headers_dict(r.headers)["dlq_reason"] for r in dlq] == ["rejected"]

    # once the catalog covers the events, the search projector builds the documents
    assert await search_loop.catch_up() == 4  # it follows every record, rejected or not
    async with stores.pg.connection() as conn:
        docs = await (
            await conn.execute("SELECT content_id, year FROM search_docs ORDER BY 1")
        ).fetchall()
        left = await (await conn.execute("SELECT count(*) FROM search_queue")).fetchone()
    assert docs == [("c1", 1996), ("c2", 1995)] and left == (0,)

    # its background step embeds them into the vector store (Qdrant Edge here)
    indexer = search.background(stores)
    assert indexer is not None
    await indexer.catch_up()
    assert await vectors.count() == 2
    query = shared_embedder().encode(["toys that come to life"])[0]
    assert (await vectors.search(query, SearchFilters(), 2))[0] == "c1"
    only_crime = await vectors.search(query, SearchFilters(genres=("Crime",)), 2)
    assert only_crime == ["c2"]  # the filter applies inside the vector search
    assert await vectors.search(query, SearchFilters(region="US"), 2) == []
    assert indexer.encoded_total == 2

    # a change that lands while a document is being rebuilt is not lost
    async with stores.pg.connection() as conn:
        await conn.execute("UPDATE content SET title = 'Heat (1995)' WHERE content_id = 'c2'")
        [(seq,)] = await (
            await conn.execute("SELECT seq FROM search_queue WHERE content_id = 'c2'")
        ).fetchall()
        await conn.execute("UPDATE content SET overview = 'changed' WHERE content_id = 'c2'")
        # the indexer read seq before the second change: its delete must keep the row
        await conn.execute("DELETE FROM search_queue WHERE content_id = 'c2' AND seq = %s", (seq,))
        left = await (await conn.execute("SELECT count(*) FROM search_queue")).fetchone()
    assert left == (1,)
    await indexer.catch_up()
    async with stores.pg.connection() as conn:
        doc = await (
            await conn.execute(
                "SELECT title, embed_text, embedded_hash = text_hash FROM search_docs"
                " WHERE content_id = 'c2'"
            )
        ).fetchone()
    assert doc == ("Heat (1995)", "Heat (1995). Crime. changed", True)
    assert indexer.encoded_total == 3  # only the changed text was embedded again
    await vectors.close()


def _spawn(db_uri: str, redis_url: str, log_path: Path, lanes: int = 1) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.runner_process", db_uri, redis_url, "200", "playback"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env={**os.environ, "RUNNER_LANES": str(lanes)},
        )


async def _applied_through(stores: Stores) -> int:
    async with stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projection_watermarks"
            " WHERE projector = 'playback'"
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("lanes", [1, 4])
async def test_killed_runner_loses_and_duplicates_nothing(
    lanes: int, elog: EmbeddedLog, stores: Stores, db_uri: str, redis_url: str, tmp_path: Path
) -> None:
    errors = tmp_path / "runner.log"
    rng = random.Random(3)
    events = [
        play(
            f"u{rng.randrange(300)}",
            f"c{rng.randrange(40)}",
            float(rng.randrange(0, 6000)),
            seconds=i,
        )
        for i in range(20000)
    ]
    pub = Publisher(elog)
    for i in range(0, len(events), 5000):
        await pub.publish_many(events[i : i + 5000])
    total = len(events)

    proc = _spawn(db_uri, redis_url, errors, lanes)
    deadline = time.monotonic() + 120
    while await _applied_through(stores) < total // 4:
        assert proc.poll() is None, errors.read_text()
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-stream, no chance to clean up
    proc.wait(10)
    partial = await _applied_through(stores)
    assert 0 < partial < total

    proc = _spawn(db_uri, redis_url, errors, lanes)
    while await _applied_through(stores) < total:
        assert proc.poll() is None, errors.read_text()
        assert time.monotonic() < deadline + 120
        await asyncio.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0

    keys = {(e.key, e.payload["content_id"]) for e in events}
    assert await _count(stores) == (len(keys), total)  # every event once, no more
    # the surviving state equals a straight, uninterrupted fold of the same events
    expected: dict[tuple[str, str], float] = {}
    for e in events:  # same key -> same partition -> log order == append order here
        expected[(e.key, e.payload["content_id"])] = e.payload["position_s"]
    async with stores.pg.connection() as conn:
        rows = await (
            await conn.execute("SELECT user_id, content_id, position_s FROM playback_positions")
        ).fetchall()
    assert {(u, c): p for u, c, p in rows} == expected
    # Redis agrees with PostgreSQL for every user
    from domain.playback import ProgressState, classify

    for user in {k[0] for k in keys}:
        items, _ = await continue_watching(stores.redis, stores.pg, user, limit=100)
        want = {
            c
            for (u, c), pos in expected.items()
            if u == user and classify(pos, 6000.0) is ProgressState.IN_PROGRESS
        }
        assert {i.content_id for i in items} == want


async def test_shards_split_the_partitions_and_apply_everything_once(
    elog: EmbeddedLog, stores: Stores
) -> None:
    from streams.runner import parse_shard

    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "-1/2", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    events = [play(f"u{i}", f"c{i % 5}", 600.0 + i, seconds=i) for i in range(400)]
    await Publisher(elog).publish_many(events)
    loops = [
        ProjectorLoop(
            ProjectionPipeline(PlaybackProjector(), stores, elog), elog, linger_ms=0, shard=(i, 3)
        )
        for i in range(3)
    ]
    applied = [await loop.catch_up() for loop in loops]
    owned = [set(loop.positions) for loop in loops]
    assert all(applied) and sum(applied) == 400
    assert set().union(*owned) == {(PLAYBACK.name, p) for p in range(PLAYBACK.partitions)}
    assert sum(len(o) for o in owned) == PLAYBACK.partitions  # disjoint
    assert await _count(stores) == (400, 400)


@given(
    i=st.integers(min_value=0, max_value=7),
    extra=st.integers(min_value=0, max_value=7),
    lanes=st.integers(min_value=1, max_value=6),
)
def test_lanes_split_a_shard_into_disjoint_parts_that_cover_it(
    i: int, extra: int, lanes: int
) -> None:
    n = i + 1 + extra  # any shard i/n
    parts = range(64)
    mine = {p for p in parts if p % n == i}
    split = lane_shards((i, n), lanes)
    owned = [{p for p in parts if p % m == j} for j, m in split]
    assert set().union(*owned) == mine
    assert sum(len(o) for o in owned) == len(mine)  # each partition in one lane only


async def test_lanes_in_one_process_apply_everything_once_and_add_up_their_lag(
    elog: EmbeddedLog, stores: Stores
) -> None:
    from prometheus_client import REGISTRY

    rng = random.Random(5)
    events = [
        play(f"u{rng.randrange(60)}", f"c{rng.randrange(8)}", float(rng.randrange(6000)), seconds=i)
        for i in range(3000)
    ]
    await Publisher(elog).publish_many(events)
    runner = EmbeddedRunner(elog, stores, [PlaybackProjector()], linger_ms=0, batch_size=300,
                            lanes={"playback": 4})  # fmt: skip
    assert len(runner.loops) == 4
    for loop in runner.loops:
        await loop.load_positions()
    owned = [set(loop.positions) for loop in runner.loops]
    assert set().union(*owned) == {(PLAYBACK.name, p) for p in range(PLAYBACK.partitions)}
    assert sum(len(o) for o in owned) == PLAYBACK.partitions
    # each lane counts only its own partitions; the gauge shows their sum
    lags = [(await loop.lag())[PLAYBACK.name] for loop in runner.loops]
    assert all(lags) and sum(lags) == len(events)
    gauge = {"projector": "playback", "topic": PLAYBACK.name}
    assert REGISTRY.get_sample_value("mgw_projector_lag_records", gauge) == len(events)

    assert await runner.catch_up() == len(events)
    for loop in runner.loops:
        await loop.lag()
    assert REGISTRY.get_sample_value("mgw_projector_lag_records", gauge) == 0
    # the same state as one straight fold of the events in log order
    expected = {(e.key, e.payload["content_id"]): e.payload["position_s"] for e in events}
    async with stores.pg.connection() as conn:
        rows = await (
            await conn.execute("SELECT user_id, content_id, position_s FROM playback_positions")
        ).fetchall()
    assert {(u, c): pos for u, c, pos in rows} == expected
    assert await _count(stores) == (len(expected), len(events))


async def test_runner_survives_lost_database_connections(
    elog: EmbeddedLog, stores: Stores, db_uri: str
) -> None:
    import psycopg

    from streams.runner import EmbeddedRunner

    runner = EmbeddedRunner(elog, stores, [PlaybackProjector()], linger_ms=0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    pub = Publisher(elog)

    async def applied_events() -> int:
        return (await _count(stores))[1]

    async def until(n: int) -> None:
        for _ in range(300):
            if await applied_events() >= n:
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"stuck at {await applied_events()} of {n}")

    await pub.publish_many([play(f"u{i}", "c1", 600.0, seconds=i) for i in range(50)])
    await until(50)
    # every other session of this database dies: pools, the LISTEN connection, all of it
    async with await psycopg.AsyncConnection.connect(db_uri, autocommit=True) as admin:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    for _attempt in range(50):  # the publisher's pool also lost its connections
        try:
            await pub.publish_many([play(f"v{i}", "c1", 600.0, seconds=i) for i in range(50)])
            break
        except Exception:
            await asyncio.sleep(0.1)
    else:
        raise AssertionError("could not publish after the connections were killed")
    await until(100)
    assert not task.done()
    stop.set()
    await asyncio.wait_for(task, 10)
    assert await _count(stores) == (100, 100)
