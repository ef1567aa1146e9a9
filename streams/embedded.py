"""The embedded log backend: a partitioned append-only log in PostgreSQL.

No broker needed; it shares the server with the projections.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from core.backoff import Backoff, Retry
from core.db import check_if_idle
from core.events import LazyHeaders, pack_headers
from core.metrics import LOG_GROUP_RECORDS as GROUP_RECORDS
from core.topics import ALL_TOPICS, TopicSpec
from streams.log import (
    MAX_RECORD_BYTES,
    LogError,
    LogRecord,
    OutgoingRecord,
    Position,
    TransientLogError,
    partition_for,
    too_large,
)

CHANNEL = "mgw_log"
#: a stored record as copy_out gives it and copy_in takes it (see EmbeddedLog.copy_out)
RawRow = tuple[int, bytes | None, bytes, bytes, int]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_COPY_IN_TYPES = ["text", "int4", "int8", "bytea", "bytea", "bytea", "timestamptz"]
log = logging.getLogger("mgw.log.embedded")
#: between reconnection attempts of the listener: 0.1 s doubling up to 5 s, full jitter
LISTEN_BACKOFF = Backoff(first=0.1, cap=5.0)
#: a group commit takes waiting appends up to this many bytes (one append larger than
#: this goes alone): it bounds one transaction's size and the memory it holds
MAX_GROUP_BYTES = 8 * 1024 * 1024
#: a group of more records than this goes in by COPY (_append_copy), a smaller one by
#: log_append: one round trip, where COPY takes several, but per record COPY is cheaper
COPY_ABOVE = 256
#: one round trip for a whole group (ops/migrations/021_log_append.sql); binary
#: parameters, so values go as they are instead of as hex text
_APPEND = "SELECT log_append(%b, %b::int4[], %b, %b, %b)"


@dataclass(slots=True)
class _Append:
    """One caller's records waiting for a group commit, and where its answer goes."""

    records: Sequence[OutgoingRecord]
    parts: list[int]
    #: each record's headers, packed (core.events.pack_headers) as they are stored
    headers: list[bytes]
    size: int
    done: asyncio.Future[list[int]]


def _refuse(r: OutgoingRecord, i: int, size: int) -> LogError:
    """Why the log cannot take a record: it fails its own caller only, before it joins
    a group."""
    if not isinstance(r.key, bytes):
        return LogError(f"record {i}: the key must be bytes, not {type(r.key).__name__}")
    if not isinstance(r.value, bytes):
        return LogError(f"record {i}: the value must be bytes, not {type(r.value).__name__}")
    return too_large(i, size)


async def _append_copy(
    conn: psycopg.AsyncConnection[Any],
    topic: str,
    parts: list[int],
    records: Sequence[OutgoingRecord],
    headers: list[bytes] | None,
) -> list[int]:
    """A large group: COPY per partition in one transaction, the head rows locked in
    partition order as log_append does. COPY streams rows the server parses as they come;
    for thousands of records it is faster than binding them as arrays (100k records of
    120 bytes in groups of 5,000: 106k/s, against 77k/s through log_append)."""
    by_partition: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(parts):
        by_partition[p].append(i)
    offsets = [0] * len(records)
    async with conn.transaction():
        for p in sorted(by_partition):
            idx = by_partition[p]
            row = await (
                await conn.execute(
                    "UPDATE log_heads SET next_offset = next_offset + %s"
                    " WHERE topic = %s AND partition = %s RETURNING next_offset",
                    (len(idx), topic, p),
                )
            ).fetchone()
            if row is None:
                raise LogError(f"topic {topic} partition {p} has no head row")
            base = row[0] - len(idx)
            async with conn.cursor().copy(
                'COPY log_records (topic, partition, "offset", key, value, headers) FROM STDIN'
            ) as copy:
                for j, i in enumerate(idx):
                    r = records[i]
                    if headers is not None:
                        packed = headers[i]
                    else:  # packed here, so Python packs while the server parses
                        packed = pack_headers(r.headers)
                        size = len(r.key) + len(r.value) + len(packed)
                        if size > MAX_RECORD_BYTES:
                            raise _refuse(r, i, size)  # rolls the transaction back
                    await copy.write_row((topic, p, base + j, r.key, r.value, packed))
                    offsets[i] = base + j
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, f"{p}:{row[0]}:{topic}"))
    return offsets


def _fail(req: _Append, exc: Exception) -> None:
    if not req.done.done():
        req.done.set_exception(exc)
        req.done.exception()  # retrieved: a caller that went away leaves no warning


class EmbeddedLog:
    backend = "embedded"

    def __init__(self, conninfo: str, *, pool_size: int = 4, timeout: float = 5.0) -> None:
        """``timeout``: how long a call waits for a connection (the database away, or
        every connection busy) before it fails with a ``TransientLogError``. Five seconds,
        as the stores' pool (core/db.py): an API write answers 503 with Retry-After then;
        at 30 s, under load, writes waited past every client's timeout (`mgw chaos load`)."""
        self._conninfo = conninfo
        self._pool = AsyncConnectionPool(
            conninfo,
            min_size=1,
            max_size=pool_size,
            timeout=timeout,
            open=False,
            name="mgw-log",
            kwargs={"autocommit": True},
            check=check_if_idle,  # see core/db.py
        )
        self._specs: dict[str, TopicSpec] = {t.name: t for t in ALL_TOPICS}
        self._heads: dict[tuple[str, int], int] = {}
        # One per partition somebody waits on, set and dropped when that partition's head
        # moves: a commit wakes the readers of its partitions only (one Event for all
        # woke every projector of every topic on every commit: 5 % of a busy API
        # process). (Events, not a Condition: Condition.wait is not cancel-safe in 3.11.)
        self._changed: dict[tuple[str, int], asyncio.Event] = {}
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        # the group commit: appends waiting per topic, and the task committing them
        self._pending: defaultdict[str, deque[_Append]] = defaultdict(deque)
        self._flushers: dict[str, asyncio.Task[None]] = {}

    async def open(self) -> EmbeddedLog:
        await self._pool.open(wait=True)
        self._listener = asyncio.create_task(self._listen(), name="mgw-log-listener")
        await asyncio.wait_for(self._listening.wait(), 10)
        await self.ensure_topics(tuple(self._specs.values()))
        return self

    async def close(self) -> None:
        # appends in flight commit or fail first; nothing waits on a closed pool
        flushers = list(self._flushers.values())
        if flushers:
            await asyncio.wait(flushers, timeout=10)
        for task in self._flushers.values():
            task.cancel()
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
        await self._pool.close()

    async def ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        try:
            await self._ensure_topics(specs)
        except psycopg.OperationalError as exc:
            raise TransientLogError(f"creating topics failed: {exc}") from exc

    async def _ensure_topics(self, specs: Sequence[TopicSpec]) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            for s in specs:
                row = await (
                    await conn.execute(
                        "INSERT INTO log_topics (topic, partitions, retention_ms) VALUES (%s,%s,%s)"
                        " ON CONFLICT (topic) DO UPDATE SET topic = EXCLUDED.topic"
                        " RETURNING partitions",
                        (s.name, s.partitions, s.retention_ms),
                    )
                ).fetchone()
                assert row is not None
                if row[0] != s.partitions:
                    # Changing the partition count would move keys; refuse like Kafka would.
                    raise LogError(f"topic {s.name} exists with {row[0]} partitions")
                await conn.execute(
                    "INSERT INTO log_heads (topic, partition)"
                    " SELECT %s, g FROM generate_series(0, %s - 1) g ON CONFLICT DO NOTHING",
                    (s.name, s.partitions),
                )
                self._specs[s.name] = s

    def partitions(self, topic: str) -> int:
        try:
            return self._specs[topic].partitions
        except KeyError:
            raise LogError(f"unknown topic {topic!r}: create it with ensure_topics") from None

    async def append(self, topic: str, record: OutgoingRecord) -> Position:
        return (await self.append_batch(topic, (record,)))[0]

    async def append_batch(self, topic: str, records: Sequence[OutgoingRecord]) -> list[Position]:
        """Append ``records``; durable when it returns. Concurrent calls for one topic
        are committed together (group commit, docs/design.md): each caller's positions come
        back once the transaction holding its records has committed, never before."""
        if not records:
            return []
        n = self.partitions(topic)
        bulk = len(records) > COPY_ABOVE
        parts: list[int] = []
        headers: list[bytes] = []
        total = 0
        seen: dict[bytes, int] = {}  # a batch is often one key (a device's sync batch)
        for i, r in enumerate(records):
            key, value = r.key, r.value
            if not isinstance(key, bytes) or not isinstance(value, bytes):
                raise _refuse(r, i, 0)
            size = len(key) + len(value)
            if not bulk:  # a bulk append packs its headers as it streams them (_append_copy)
                packed = pack_headers(r.headers)
                size += len(packed)
                headers.append(packed)
            if size > MAX_RECORD_BYTES:
                raise _refuse(r, i, size)
            total += size
            part = seen.get(key)
            if part is None:
                part = seen[key] = partition_for(key, n)
            parts.append(part)
        if bulk:
            # A bulk append (ingest, restore) is a group by itself, committed here: the
            # caller is one, so a record refused midway fails only it, as it should.
            offsets = await self._append_bulk(topic, parts, records)
            return [Position(topic, p, o) for p, o in zip(parts, offsets, strict=True)]
        req = _Append(records, parts, headers, total, asyncio.get_running_loop().create_future())
        self._pending[topic].append(req)
        if topic not in self._flushers:
            self._flushers[topic] = asyncio.create_task(
                self._flush(topic), name=f"mgw-log-append-{topic}"
            )
        # A cancelled caller leaves the group it is in alone: its records are committed
        # with their neighbours, as a write whose answer was lost would be.
        offsets = await asyncio.shield(req.done)
        return [Position(topic, p, o) for p, o in zip(parts, offsets, strict=True)]

    async def _flush(self, topic: str) -> None:
        """The group committer of one topic: while appends are waiting, take as many as
        fit in one group and commit them; a lone append is committed at once (no
        linger), and groups form by themselves while a commit is in flight."""
        queue = self._pending[topic]
        try:
            while queue:
                group: list[_Append] = []
                size = 0
                while queue and (not group or size + queue[0].size <= MAX_GROUP_BYTES):
                    req = queue.popleft()
                    group.append(req)
                    size += req.size
                await self._commit_group(topic, group)
        finally:
            del self._flushers[topic]
            # cancelled (the log is closing): nothing committed answers "closed"
            while queue:
                _fail(queue.popleft(), TransientLogError(f"the log closed before {topic}"))

    async def _commit_group(self, topic: str, group: list[_Append]) -> None:
        try:
            offsets = await self._append_group(topic, group)
        except psycopg.OperationalError as exc:  # connection lost, server away: retry
            for req in group:
                _fail(req, TransientLogError(f"append to {topic} failed: {exc}"))
            return
        except (psycopg.Error, LogError) as exc:
            if len(group) > 1:
                # One record the database refuses fails its own caller, not the group:
                # nothing was committed, so each caller goes again alone, in order.
                for req in group:
                    await self._commit_group(topic, [req])
                return
            _fail(
                group[0],
                exc if isinstance(exc, LogError) else LogError(f"append to {topic} failed: {exc}"),
            )
            return
        except BaseException as exc:
            for req in group:
                _fail(req, TransientLogError(f"append to {topic} was interrupted: {exc!r}"))
            raise
        GROUP_RECORDS.observe(len(offsets))
        i = 0
        for req in group:
            k = len(req.records)
            if not req.done.done():
                req.done.set_result(offsets[i : i + k])
            i += k

    async def _append_bulk(
        self, topic: str, parts: list[int], records: Sequence[OutgoingRecord]
    ) -> list[int]:
        try:
            async with self._pool.connection() as conn:
                offsets = await _append_copy(conn, topic, parts, records, None)
        except psycopg.OperationalError as exc:  # connection lost, server away: retry
            raise TransientLogError(f"append to {topic} failed: {exc}") from exc
        except psycopg.Error as exc:
            raise LogError(f"append to {topic} failed: {exc}") from exc
        GROUP_RECORDS.observe(len(offsets))
        return offsets

    async def _append_group(self, topic: str, group: list[_Append]) -> list[int]:
        parts = [p for req in group for p in req.parts]
        records = [r for req in group for r in req.records]
        headers = [h for req in group for h in req.headers]
        async with self._pool.connection() as conn:
            if len(records) > COPY_ABOVE:
                return await _append_copy(conn, topic, parts, records, headers)
            cur = await conn.execute(
                _APPEND,
                (topic, parts, [r.key for r in records], [r.value for r in records], headers),
            )
            row = await cur.fetchone()
        assert row is not None
        offsets: list[int] = row[0]
        return offsets

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[LogRecord]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    'SELECT "offset", key, value, headers,'
                    " (extract(epoch FROM appended_at) * 1000)::bigint"
                    ' FROM log_records WHERE topic = %s AND partition = %s AND "offset" >= %s'
                    ' ORDER BY "offset" LIMIT %s',
                    (topic, partition, offset, max_records),
                    binary=True,
                )
                rows = await cur.fetchall()
        except psycopg.OperationalError as exc:
            raise TransientLogError(f"read of {topic}[{partition}] failed: {exc}") from exc
        # tuple.__new__ skips the NamedTuple's Python-level __new__: 0.8 -> 0.5 µs a record
        new = tuple.__new__
        return [
            new(LogRecord, (topic, partition, o, k, v, LazyHeaders(h), ts))
            for o, k, v, h, ts in rows
        ]

    # -- bulk paths for backup and restore (mgw/backup.py) ------------------------------
    # Rows are (offset, key, value, packed headers, appended_at in microseconds): the
    # stored bytes as they are, at the stored precision, so a restore is exact.

    async def topic_specs(self) -> list[TopicSpec]:
        """Every topic the log knows, including ones no code names any more."""
        async with self._pool.connection() as conn:
            cur = await conn.execute(
                "SELECT topic, partitions, retention_ms FROM log_topics ORDER BY topic"
            )
            return [TopicSpec(t, n, r) for t, n, r in await cur.fetchall()]

    async def copy_out(
        self,
        topic: str,
        partition: int,
        start: int,
        end: int,
        on_rows: Callable[[list[RawRow]], None],
        chunk: int = 10_000,
    ) -> None:
        """Hand the rows in [start, end) to ``on_rows`` in offset order, ``chunk`` at a time."""
        async with (
            self._pool.connection() as conn,
            conn.cursor() as cur,
            cur.copy(
                'COPY (SELECT "offset", key, value, headers,'
                " (extract(epoch FROM appended_at) * 1000000)::bigint FROM log_records"
                ' WHERE topic = %s AND partition = %s AND "offset" >= %s AND "offset" < %s'
                ' ORDER BY "offset") TO STDOUT (FORMAT BINARY)',
                (topic, partition, start, end),
            ) as copy,
        ):
            copy.set_types(["int8", "bytea", "bytea", "bytea", "int8"])
            rows: list[RawRow] = []
            async for row in copy.rows():
                rows.append(row)
                if len(rows) >= chunk:
                    on_rows(rows)
                    rows = []
            if rows:
                on_rows(rows)

    async def copy_in(self, topic: str, partition: int, rows: Sequence[RawRow]) -> int:
        """Load rows at their own offsets (a restore); they must continue the partition's
        head densely. Returns the new head."""
        if not rows:
            return (await self.end_offsets(topic)).get(partition, 0)
        first = rows[0][0]
        if rows[-1][0] - first != len(rows) - 1:
            raise LogError(f"{topic}[{partition}]: rows from {first} are not dense")
        try:
            async with self._pool.connection() as conn, conn.transaction():
                # The head row lock serializes us with appenders, as in append_batch.
                row = await (
                    await conn.execute(
                        "SELECT next_offset FROM log_heads WHERE topic = %s AND partition = %s"
                        " FOR UPDATE",
                        (topic, partition),
                    )
                ).fetchone()
                if row is None:
                    raise LogError(f"topic {topic!r} partition {partition} has no head row")
                if row[0] != first:
                    raise LogError(
                        f"{topic}[{partition}] ends at {row[0]}: rows from {first} cannot go "
                        "at their own offsets"
                    )
                async with conn.cursor().copy(
                    'COPY log_records (topic, partition, "offset", key, value, headers,'
                    " appended_at) FROM STDIN (FORMAT BINARY)"
                ) as copy:
                    copy.set_types(_COPY_IN_TYPES)
                    for off, key, value, headers, ts_us in rows:
                        at = _EPOCH + timedelta(microseconds=ts_us)
                        await copy.write_row((topic, partition, off, key, value, headers, at))
                head = first + len(rows)
                await conn.execute(
                    "UPDATE log_heads SET next_offset = %s WHERE topic = %s AND partition = %s",
                    (head, topic, partition),
                )
                await conn.execute(
                    "SELECT pg_notify(%s, %s)", (CHANNEL, f"{partition}:{head}:{topic}")
                )
        except psycopg.OperationalError as exc:
            raise TransientLogError(f"restore into {topic} failed: {exc}") from exc
        return head

    async def end_offsets(self, topic: str) -> dict[int, int]:
        try:
            async with self._pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT partition, next_offset FROM log_heads WHERE topic = %s", (topic,)
                )
                return {p: o for p, o in await cur.fetchall()}
        except psycopg.OperationalError as exc:
            raise TransientLogError(f"end offsets of {topic} failed: {exc}") from exc

    async def wait(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        key = (topic, partition)
        if self._heads.get(key, 0) > offset:
            return True
        # Taken before looking, so a commit seen after the look still wakes us.
        changed = self._changed.setdefault(key, asyncio.Event())
        if key not in self._heads or not self._listening.is_set():
            # Not heard of since the listener (re)connected: ask once; from then on every
            # commit to it arrives as a notification. Without a listener: every time.
            for p, o in (await self.end_offsets(topic)).items():
                self._heads[(topic, p)] = max(self._heads.get((topic, p), 0), o)
        deadline = asyncio.get_running_loop().time() + timeout
        while self._heads.get(key, 0) <= offset:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await changed.wait()
            except TimeoutError:
                return False
            changed = self._changed.setdefault(key, asyncio.Event())
        return True

    def _wake(self, key: tuple[str, int] | None = None) -> None:
        """Wake the waiters of one partition, or of all (the listener was lost)."""
        if key is None:
            woken = list(self._changed.values())
            self._changed.clear()
        else:
            one = self._changed.pop(key, None)
            woken = [one] if one is not None else []
        for event in woken:
            event.set()

    async def _listen(self) -> None:
        # A lost listener only delays wake-ups (waiters re-read the heads after their
        # timeout), so it reconnects for as long as the database is away, saying so once.
        retry = Retry(
            "log listener",
            log,
            backoff=LISTEN_BACKOFF,
            postgres=self._conninfo,
            # waiters poll when it is gone, so an error that is not transient ends it
            give_up_after=5,
            gives_up="the log listener stops, and readers notice new records only by "
            "polling (about once a second); restart the process to listen again",
        )
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    # heads read while nobody listened may have moved unheard: forget them
                    self._heads.clear()
                    self._listening.set()
                    self._wake()
                    retry.succeeded()
                    async for note in conn.notifies():
                        p, head, topic = note.payload.split(":", 2)
                        k = (topic, int(p))
                        if int(head) > self._heads.get(k, 0):
                            self._heads[k] = int(head)
                            self._wake(k)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Until it is back, waiters read the heads on every call (polling).
                self._listening.clear()
                self._heads.clear()
                self._wake()
                delay = retry.failed(exc)
                if delay is None:  # logged, with what it means
                    return
                await asyncio.sleep(delay)
