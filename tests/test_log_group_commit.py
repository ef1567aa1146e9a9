"""The embedded log's group commit (streams/embedded.py, docs/design.md): concurrent
appends share a transaction, and each still means what a lone append means."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from prometheus_client import REGISTRY

from core.topics import TopicSpec
from streams.embedded import COPY_ABOVE, MAX_RECORD_BYTES, EmbeddedLog
from streams.log import LogError, OutgoingRecord, Position, partition_for
from tests.conftest import unique_topic

REPO = Path(__file__).resolve().parents[1]


def _groups() -> float:
    return REGISTRY.get_sample_value("mgw_log_group_commit_records_count") or 0.0


def _key_in(partition: int, partitions: int, prefix: str) -> bytes:
    return next(
        k
        for i in range(10_000)
        if partition_for(k := f"{prefix}{i}".encode(), partitions) == partition
    )


async def test_64_appenders_to_one_partition_share_commits_and_stay_dense(db_uri: str) -> None:
    """64 tasks append to one partition at once while a reader follows the head: the
    appends share commits, offsets are dense and in each appender's order, every
    returned position holds that appender's record, and the reader never skips one."""
    log = await EmbeddedLog(db_uri).open()
    topic = unique_topic("group")
    await log.ensure_topics([TopicSpec(topic, 1)])
    appenders, each = 64, 25
    positions: dict[int, list[Position]] = {}
    done = asyncio.Event()
    seen: list[bytes] = []

    async def appender(a: int) -> None:
        got = positions[a] = []
        for i in range(each):
            got.append(await log.append(topic, OutgoingRecord(b"same-key", f"{a}:{i}".encode())))

    async def reader() -> None:
        offset = 0
        while not done.is_set() or offset < (await log.end_offsets(topic))[0]:
            batch = await log.read(topic, 0, offset, 500)
            for r in batch:
                assert r.offset == offset, f"the reader at {offset} was handed {r.offset}"
                offset += 1
                seen.append(r.value)
            if not batch:
                await log.wait(topic, 0, offset, 0.05)

    groups_before = _groups()
    try:
        follow = asyncio.create_task(reader())
        await asyncio.gather(*(appender(a) for a in range(appenders)))
        done.set()
        await follow
        total = appenders * each
        assert (await log.end_offsets(topic))[0] == total
        assert len(seen) == total and len(set(seen)) == total
        commits = _groups() - groups_before
        assert commits < total / 4, f"{commits:.0f} commits for {total} appends: no grouping"
        stored = {r.offset: r.value for r in await log.read(topic, 0, 0, total)}
        assert sorted(stored) == list(range(total)), "offsets are not dense"
        for a, got in positions.items():
            offsets = [p.offset for p in got]
            assert offsets == sorted(offsets), f"appender {a}'s records out of its order"
            for i, p in enumerate(got):
                assert stored[p.offset] == f"{a}:{i}".encode()
    finally:
        await log.close()


@pytest.mark.parametrize("good", [30, COPY_ABOVE + 30], ids=["log_append", "copy"])
async def test_a_failing_record_fails_its_own_caller_only(db_uri: str, good: int) -> None:
    """In one group: a record too large, a key that is not bytes, and a record for a
    partition the database refuses (its head row is gone). Each of those callers gets a
    LogError saying what is wrong; every other caller's records are committed. Small
    groups go in through log_append, large ones by COPY: both are held to it."""
    log = await EmbeddedLog(db_uri).open()
    topic = unique_topic("isolate")
    await log.ensure_topics([TopicSpec(topic, 4)])
    with psycopg.connect(db_uri, autocommit=True) as conn:
        conn.execute("DELETE FROM log_heads WHERE topic = %s AND partition = 3", (topic,))
    broken = _key_in(3, 4, "broken-")
    keys = [_key_in(p, 4, f"good{p}-") for p in (0, 1, 2)]
    try:
        calls = [
            log.append(topic, OutgoingRecord(keys[i % 3], f"ok{i}".encode())) for i in range(good)
        ]
        calls.insert(5, log.append(topic, OutgoingRecord(b"big", b"x" * (MAX_RECORD_BYTES + 1))))
        calls.insert(10, log.append(topic, OutgoingRecord("text", b"v")))  # type: ignore[arg-type]
        calls.insert(15, log.append(topic, OutgoingRecord(broken, b"nowhere")))
        results = await asyncio.gather(*calls, return_exceptions=True)
        errors = {i: r for i, r in enumerate(results) if isinstance(r, BaseException)}
        assert sorted(errors) == [5, 10, 15], errors
        assert all(isinstance(e, LogError) for e in errors.values())
        assert "bytes" in str(errors[5]) and f"{MAX_RECORD_BYTES:,}" in str(errors[5])
        assert "key must be bytes" in str(errors[10])
        assert "partition 3 has no head row" in str(errors[15])
        ends = await log.end_offsets(topic)
        assert sum(ends.values()) == good
        for p in (0, 1, 2):
            values = [r.value for r in await log.read(topic, p, 0, good)]
            assert values == [f"ok{i}".encode() for i in range(good) if i % 3 == p]
    finally:
        await log.close()


def _blocked_appends(db_uri: str) -> list[int]:
    with psycopg.connect(db_uri, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT log_append%%'"
            " AND wait_event_type = 'Lock'"
        ).fetchall()
    return [r[0] for r in rows]


def test_kill_9_between_forming_a_group_and_its_commit(db_uri: str) -> None:
    """A process appends from 16 tasks and prints every acknowledged append. The test
    holds the topic's head rows so the next group is formed and sent but cannot commit,
    kills the process with SIGKILL, and ends the group's database session (the machine
    died with it). Every acknowledged append is in the log at its position, no append was
    acknowledged before its commit, and what is in the log is dense and, per task, a
    prefix of what it appended."""
    topic = unique_topic("crash")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.group_commit_appender", db_uri, topic, "16"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    acks: list[tuple[int, int, int, int]] = []
    reader = threading.Thread(
        target=lambda: acks.extend(
            tuple(int(x) for x in line.split()[1:]) for line in proc.stdout or ()
        ),
        daemon=True,
    )
    reader.start()
    try:
        deadline = time.monotonic() + 60
        while len(acks) < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(acks) >= 300, "the appender did not get going"
        with psycopg.connect(db_uri) as holder:
            holder.execute("SELECT 1 FROM log_heads WHERE topic = %s FOR UPDATE", (topic,))
            while not (blocked := _blocked_appends(db_uri)) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert blocked, "no group commit waited on the head rows"
            acked_before_kill = len(acks)
            time.sleep(0.2)  # an implementation that answers before committing answers now
            proc.kill()
            proc.wait(30)
            with psycopg.connect(db_uri, autocommit=True) as admin:
                for pid in blocked:
                    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            holder.rollback()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    reader.join(10)
    if proc.stdout:
        proc.stdout.close()
    assert len(acks) == acked_before_kill, "appends were acknowledged while none could commit"
    with psycopg.connect(db_uri, autocommit=True) as conn:
        rows = conn.execute(
            'SELECT partition, "offset", value FROM log_records WHERE topic = %s'
            ' ORDER BY partition, "offset"',
            (topic,),
        ).fetchall()
        heads = dict(
            conn.execute(
                "SELECT partition, next_offset FROM log_heads WHERE topic = %s", (topic,)
            ).fetchall()
        )
    stored = {(p, o): bytes(v).decode() for p, o, v in rows}
    for p in (0, 1):
        offsets = sorted(o for q, o in stored if q == p)
        assert offsets == list(range(heads[p])), f"partition {p} is not dense"
    for t, seq, p, o in acks:
        assert stored.get((p, o)) == f"{t}:{seq}", f"acknowledged {t}:{seq} is not at {p}:{o}"
    per_task: dict[int, list[int]] = {}
    for v in stored.values():
        t, seq = map(int, v.split(":"))
        per_task.setdefault(t, []).append(seq)
    for t, seqs in per_task.items():
        assert sorted(seqs) == list(range(len(seqs))), f"task {t} has a hole"
    assert len(stored) == len(acks), "the group that was cut off left records behind"


@pytest.mark.parametrize("n", [1, 3])
async def test_a_lone_append_commits_by_itself(db_uri: str, n: int) -> None:
    """No linger: with nobody else appending, an append is one group of its own."""
    log = await EmbeddedLog(db_uri).open()
    topic = unique_topic("lone")
    await log.ensure_topics([TopicSpec(topic, 2)])
    try:
        for i in range(n):
            before = _groups()
            pos = await log.append(topic, OutgoingRecord(b"k", f"v{i}".encode()))
            assert _groups() - before == 1
            assert pos.offset == i
    finally:
        await log.close()


async def test_a_bulk_append_with_one_record_too_large_appends_nothing(db_uri: str) -> None:
    """A bulk append (more than COPY_ABOVE records) streams its records by COPY and
    measures each one's headers on the way: one too large fails the call whole, and
    none of its records is left behind."""
    log = await EmbeddedLog(db_uri).open()
    topic = unique_topic("bulk")
    await log.ensure_topics([TopicSpec(topic, 2)])
    records = [OutgoingRecord(f"k{i}".encode(), b"v", (("n", b"1"),)) for i in range(400)]
    records[350] = OutgoingRecord(b"k", b"v", (("huge", b"h" * MAX_RECORD_BYTES),))
    try:
        with pytest.raises(LogError, match="record 350 is"):
            await log.append_batch(topic, records)
        assert sum((await log.end_offsets(topic)).values()) == 0
        ok = await log.append_batch(topic, records[:350])
        assert sorted(p.offset for p in ok if p.partition == 0) == list(
            range(sum(1 for p in ok if p.partition == 0))
        )
        assert sum((await log.end_offsets(topic)).values()) == 350
    finally:
        await log.close()
