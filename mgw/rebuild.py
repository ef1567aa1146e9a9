"""`mgw rebuild PROJECTOR [--until TIME|POSITION]`: a new version of a read model, built
beside the live one while it keeps serving, then switched in at once.

Blue/green, in PostgreSQL:

1. **Build.** A schema per version (``mgw_rebuild_<projector>_<stamp>``) gets empty copies
   of the projector's tables and its own checkpoint and watermark tables. The projector
   runs over the whole log through a pool whose ``search_path`` puts that schema first,
   so its unqualified SQL writes the copies and still reads every other read model live.
   Side effects are off: no dead letters, no derived events, no pushes, no side stores.
2. **Meet the live mark.** The rebuild locks the live projector's checkpoint rows (``FOR
   UPDATE``, as every live batch does first), so the live projector pauses between two
   batches. Then it catches the new version up to the log's end, which is at or past
   the live mark.
3. **Switch.** In that same transaction the live tables move to a retired schema, the new
   ones into ``public``, and the live checkpoints and watermarks take the new version's
   values (updated in place, so the paused batch re-reads them and skips what the new
   version already holds). A reader waits for the commit (milliseconds), and is never
   refused. A query that began before the switch finishes on the old tables, which are
   complete. Redis state derived from the rows is then replaced key by key
   (``resync_side_stores``).
4. **Retire.** After a grace period the retired schema is dropped.

``--until`` builds an as-of copy the same way, from the records the log stored up to then,
and leaves it in its schema for an investigation (``SET search_path = <schema>, public``).
It is never switched live. Progress is in ``projection_rebuilds``
(``GET /v1/admin/rebuilds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import multiprocessing.forkserver
import os
import random
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from tqdm import tqdm

from core.db import open_pool
from core.ids import new_id
from core.settings import Settings
from mgw.platform import open_log, open_platform
from projections import maintenance
from projections.base import Projector, Stores
from projections.registry import by_name
from streams.log import EventLog, LogRecord, Position
from streams.processing import ProjectionPipeline
from streams.runner import ProjectorLoop

#: tables the pipeline writes for every projector: each version keeps its own
BOOKKEEPING = ("projection_checkpoints", "projection_watermarks")
GRACE_S = 30.0
#: how long the switch may make readers wait for a table lock, and how many times it
#: tries (with a pause between) before failing the rebuild
SWITCH_LOCK_TIMEOUT_MS = 300
SWITCH_ATTEMPTS = 60


class Refused(Exception):
    """This projector cannot be rebuilt blue/green; the message says what to do."""


@dataclass
class Progress:
    """The rebuild's row in ``projection_rebuilds``, written at most once a second."""

    pool: Any
    rebuild_id: str
    done: int = 0
    total: int = 0
    _at: float = 0.0

    async def set(self, state: str | None = None, *, force: bool = False, **cols: Any) -> None:
        now = time.monotonic()
        if not force and state is None and not cols and now - self._at < 1.0:
            return
        self._at = now
        sets = ["records_done = %s", "records_total = %s", "updated_at = now()"]
        args: list[Any] = [self.done, self.total]
        if state is not None:
            sets.append("state = %s")
            args.append(state)
        for k, v in cols.items():
            sets.append(f"{k} = %s")  # names come from this module, never from input
            args.append(v)
        async with self.pool.connection() as conn:
            await conn.execute(
                f"UPDATE projection_rebuilds SET {', '.join(sets)} WHERE rebuild_id = %s",
                (*args, self.rebuild_id),
            )


class BoundedLog:
    """The log as it stood at ``stops`` (next offset per topic-partition): an as-of view."""

    def __init__(self, log: EventLog, stops: dict[tuple[str, int], int]) -> None:
        self.log = log
        self.stops = stops
        self.backend = log.backend

    def partitions(self, topic: str) -> int:
        return self.log.partitions(topic)

    async def read(
        self, topic: str, partition: int, offset: int, max_records: int
    ) -> list[LogRecord]:
        stop = self.stops.get((topic, partition), 0)
        if offset >= stop:
            return []
        got = await self.log.read(topic, partition, offset, min(max_records, stop - offset))
        return [r for r in got if r.offset < stop]

    async def end_offsets(self, topic: str) -> dict[int, int]:
        ends = await self.log.end_offsets(topic)
        return {p: min(e, self.stops.get((topic, p), 0)) for p, e in ends.items()}

    async def wait(self, topic: str, partition: int, offset: int, timeout: float) -> bool:
        return False  # an as-of view never grows

    def __getattr__(self, name: str) -> Any:  # appends and the rest: the real log
        return getattr(self.log, name)


async def stops_at(
    log: EventLog, topics: tuple[str, ...], until_ms: int
) -> dict[tuple[str, int], int]:
    """Per partition, the first offset the log stored after ``until_ms`` (binary search:
    a partition's storage times only grow)."""
    stops: dict[tuple[str, int], int] = {}
    for topic in topics:
        for p, end in (await log.end_offsets(topic)).items():
            lo, hi = 0, end
            while lo < hi:
                mid = (lo + hi) // 2
                rec = await log.read(topic, p, mid, 1)
                if rec and rec[0].timestamp_ms <= until_ms:
                    lo = mid + 1
                else:
                    hi = mid
            stops[(topic, p)] = lo
    return stops


async def parse_until(log: EventLog, raw: str) -> int:
    """``--until``: an ISO time, or a position (``topic:partition:offset``, what commands
    return) meaning "when that record was stored". Milliseconds since the epoch."""
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        return int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() * 1000)
    except ValueError:
        pass
    try:
        pos = Position.parse(raw)
    except Exception:
        raise SystemExit(
            f"--until {raw!r}: give an ISO time (2026-12-01T09:30:00Z) or a position"
            " (topic:partition:offset)"
        ) from None
    rec = await log.read(pos.topic, pos.partition, pos.offset, 1)
    if not rec or rec[0].offset != pos.offset:
        raise SystemExit(f"--until {raw!r}: the log has no record at that position")
    return rec[0].timestamp_ms


def refusal(projector: Projector, triggered: list[str]) -> str | None:
    if "vectors" in projector.side_stores:
        return (
            f"{projector.name} keeps vectors outside PostgreSQL, which this rebuild cannot"
            f" version yet: stop the writers and run `mgw replay {projector.name}`"
        )
    if "redis" in projector.side_stores and not hasattr(projector, "resync_side_stores"):
        return f"{projector.name} has Redis state with no resync: use `mgw replay`"
    if triggered:
        return (
            f"{projector.name}'s tables {', '.join(triggered)} carry triggers that copies would"
            f" lose: use `mgw replay {projector.name}`"
        )
    return None


async def _triggered(pool: Any, tables: tuple[str, ...]) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE NOT t.tgisinternal AND n.nspname = 'public' AND c.relname = ANY(%s)",
            (list(tables),),
        )
        return sorted(r[0] for r in await cur.fetchall())


async def _create_version(pool: Any, schema: str, tables: tuple[str, ...]) -> None:
    async with pool.connection() as conn, conn.transaction():
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        for t in (*tables, *BOOKKEEPING):
            await conn.execute(
                sql.SQL("CREATE TABLE {}.{} (LIKE public.{} INCLUDING ALL)").format(
                    sql.Identifier(schema), sql.Identifier(t), sql.Identifier(t)
                )
            )


async def _build(
    settings: Settings,
    db_url: str,
    schema: str,
    projector: Projector,
    log: Any,
    progress: Progress,
    bar: Any,
    *,
    parallel: bool = True,
) -> None:
    """Run the projector into ``schema`` up to the log's end. A shardable projector is
    built by one process per core over disjoint partitions (as `mgw up
    --projector-processes` runs it): each batch is Python work (decode, fold) then
    PostgreSQL work, and one process leaves a core idle half the time."""
    n = shards(projector, log) if parallel else 1
    if n == 1:
        await _build_shard(settings, db_url, schema, projector.name, (0, 1), _stops(log))
        await _count(db_url, schema, projector, progress, bar)
        return
    ctx = _workers()
    procs = [
        ctx.Process(
            target=_shard_main,
            args=(settings, db_url, schema, projector.name, (i, n), _stops(log)),
            name=f"rebuild-{projector.name}-{i}",
        )
        for i in range(n)
    ]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            await asyncio.sleep(0.5)
            await _count(db_url, schema, projector, progress, bar)
        failed = [p.name for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"rebuild shards failed: {', '.join(failed)} (see their log)")
        await _count(db_url, schema, projector, progress, bar)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(10)


def _workers() -> Any:
    """Shard processes fork from a server that has imported this module (started early by
    ``run_rebuild``, so its imports overlap the setup): a spawned process spent 0.7 s of a
    4 s build importing, and forking the caller itself would copy its event loop and
    threads."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _stops(log: Any) -> dict[tuple[str, int], int] | None:
    return log.stops if isinstance(log, BoundedLog) else None


async def _count(
    db_url: str, schema: str, projector: Projector, progress: Progress, bar: Any
) -> None:
    """Progress from the new version's watermarks: records it has applied so far."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        cur = await conn.execute(
            sql.SQL(
                "SELECT coalesce(sum(next_offset), 0) FROM {}.projection_watermarks"
                " WHERE projector = %s"
            ).format(sql.Identifier(schema)),
            (projector.name,),
        )
        row = await cur.fetchone()
    done = int(row[0]) if row else 0
    bar.update(max(0, done - progress.done))
    progress.done = max(progress.done, done)
    await progress.set()


def _shard_main(
    settings: Settings,
    db_url: str,
    schema: str,
    name: str,
    shard: tuple[int, int],
    stops: dict[tuple[str, int], int] | None,
) -> None:
    asyncio.run(_build_shard(settings, db_url, schema, name, shard, stops))


async def _build_shard(
    settings: Settings,
    db_url: str,
    schema: str,
    name: str,
    shard: tuple[int, int],
    stops: dict[tuple[str, int], int] | None,
) -> int:
    """One shard of a build, to the log's end (or ``stops``): records applied."""
    projector = by_name(name)
    log: Any = await open_log(settings, db_url, {})
    if stops is not None:
        log = BoundedLog(log, stops)
    # a commit need not wait for its WAL flush: a rebuild that crashes starts over
    conninfo = make_conninfo(
        db_url, options=f"-c search_path={schema},public -c synchronous_commit=off"
    )
    pool = open_pool(conninfo, max_size=2, name=f"rebuild-{name}-{shard[0]}")
    await pool.open(wait=True)
    try:
        stores = Stores(pg=pool, settings=settings)
        pipeline = ProjectionPipeline(projector, stores, log, dead_letters=False, emit=False)
        loop = ProjectorLoop(
            pipeline,
            log,
            batch_size=max(settings.batch_size, REBUILD_BATCH),
            linger_ms=0,
            shard=shard,
        )
        return await loop.catch_up()
    finally:
        await pool.close()
        await log.close()


#: records per build batch: a build serves no reader, so larger batches fold more of a
#: key's events into one row (bench/rebuild.py, 200,000 events: 38k/s at 10,000, 48k/s at
#: 50,000, no gain at 100,000)
REBUILD_BATCH = 50_000

#: processes that build a shardable projector: one per core (bench/rebuild.py on 2
#: cores: 1 process 59k/s, 2 processes 65k/s, 4 processes 55k/s)
BUILD_SHARDS = os.cpu_count() or 1


def shards(projector: Projector, log: Any) -> int:
    if not getattr(projector, "shardable", True):
        return 1
    partitions = min(log.partitions(t) for t in projector.topics)
    return max(1, min(BUILD_SHARDS, partitions))


async def _total(log: Any, topics: tuple[str, ...]) -> int:
    return sum([sum((await log.end_offsets(t)).values()) for t in topics])


async def _switch(
    settings: Settings,
    db_url: str,
    pool: Any,
    schema: str,
    retired: str,
    projector: Projector,
    log: Any,
    progress: Progress,
    bar: Any,
) -> None:
    """Pause the live projector between batches, meet its mark, swap the tables."""
    ident = sql.Identifier
    async with await psycopg.AsyncConnection.connect(db_url) as conn, conn.transaction():
        # every live batch locks these rows first: holding them pauses the live projector
        await conn.execute(
            "SELECT 1 FROM projection_checkpoints WHERE projector = %s ORDER BY topic,"
            " partition FOR UPDATE",
            (projector.name,),
        )
        progress.total = progress.done + max(0, await _total(log, projector.topics) - progress.done)
        # the last stretch is short: in this process, while the live projector waits
        await _build(settings, db_url, schema, projector, log, progress, bar, parallel=False)
        await progress.set("switching", force=True)
        # readers queue behind these locks for the few statements below. A transaction
        # holding a table (a long read, another projector's batch) makes the switch give
        # up and retry rather than make every reader queue behind it: with 10 s here,
        # readers under load ran out of pooled connections and got 503s
        await conn.execute(f"SET LOCAL lock_timeout = '{SWITCH_LOCK_TIMEOUT_MS}ms'")
        await conn.execute(sql.SQL("CREATE SCHEMA {}").format(ident(retired)))
        for t in projector.tables:
            await conn.execute(
                sql.SQL("ALTER TABLE public.{} SET SCHEMA {}").format(ident(t), ident(retired))
            )
            await conn.execute(
                sql.SQL("ALTER TABLE {}.{} SET SCHEMA public").format(ident(schema), ident(t))
            )
        # in place, so the paused live batch re-reads the new marks once it gets the rows
        await conn.execute(
            sql.SQL(
                'UPDATE projection_checkpoints c SET "offset" = s."offset"'
                " FROM {}.projection_checkpoints s WHERE c.projector = s.projector"
                " AND c.topic = s.topic AND c.partition = s.partition"
            ).format(ident(schema))
        )
        await conn.execute(
            sql.SQL(
                'INSERT INTO projection_checkpoints (projector, topic, partition, "offset")'
                ' SELECT projector, topic, partition, "offset"'
                " FROM {}.projection_checkpoints ON CONFLICT DO NOTHING"
            ).format(ident(schema))
        )
        await conn.execute(
            sql.SQL(
                "INSERT INTO projection_watermarks (projector, topic, partition, next_offset)"
                " SELECT projector, topic, partition, next_offset FROM {}.projection_watermarks"
                " ON CONFLICT (projector, topic, partition) DO UPDATE SET next_offset ="
                " GREATEST(projection_watermarks.next_offset, EXCLUDED.next_offset),"
                " updated_at = now()"
            ).format(ident(schema))
        )
    async with pool.connection() as c:
        await c.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(ident(schema)))


async def run_rebuild(
    settings: Settings,
    name: str,
    *,
    until: str | None = None,
    grace_s: float = GRACE_S,
    progress: bool = True,
    as_json: bool = False,
    on_result: Any = None,
) -> int:
    """``on_result`` receives what was printed, as a dict (benchmarks, tests)."""
    try:
        projector = by_name(name)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    if getattr(projector, "shardable", True):
        _workers()
        multiprocessing.forkserver.ensure_running()
    async with open_platform(settings, with_vectors=False) as pf:
        db_url = pf.resolved.database_url if pf.resolved else settings.database_url
        assert db_url is not None
        why = refusal(projector, await _triggered(pf.stores.pg, projector.tables))
        if why:
            print(f"mgw rebuild: {why}", file=sys.stderr)
            return 2
        stamp = datetime.now(UTC).strftime("%Y%m%dt%H%M%S")
        kind = "as_of" if until else "blue_green"
        schema = f"mgw_{'asof' if until else 'rebuild'}_{name}_{stamp}"
        retired = f"mgw_retired_{name}_{stamp}"
        rebuild_id = new_id()
        log: Any = pf.log
        if until:
            until_ms = await parse_until(pf.log, until)
            log = BoundedLog(pf.log, await stops_at(pf.log, projector.topics, until_ms))
        state = Progress(pf.stores.pg, rebuild_id, total=await _total(log, projector.topics))
        async with pf.stores.pg.connection() as conn:
            await conn.execute(
                "INSERT INTO projection_rebuilds (rebuild_id, projector, kind, schema_name, state,"
                " until_spec, records_total) VALUES (%s, %s, %s, %s, 'building', %s, %s)",
                (rebuild_id, name, kind, schema, until, state.total),
            )
        started = time.perf_counter()
        result: dict[str, Any] = {"rebuild_id": rebuild_id, "projector": name, "kind": kind}
        try:
            before = await maintenance.checksum(pf.stores, projector) if not until else None
            await _create_version(pf.stores.pg, schema, projector.tables)
            with tqdm(
                total=state.total, desc=f"rebuild {name}", unit="rec", disable=not progress,
                file=sys.stderr,
            ) as bar:  # fmt: skip
                build_started = time.perf_counter()
                await _build(settings, db_url, schema, projector, log, state, bar)
                built_s = time.perf_counter() - build_started
                result.update(records=state.done, build_s=round(built_s, 2))
                result["records_per_s"] = round(state.done / max(built_s, 1e-9))
                if until:
                    await state.set("as_of_ready", force=True, finished_at=datetime.now(UTC))
                    result.update(schema=schema, state="as_of_ready")
                    _report(result, as_json, f"SET search_path = {schema}, public", on_result)
                    return 0
                for attempt in range(SWITCH_ATTEMPTS):
                    try:
                        await _switch(
                            settings, db_url, pf.stores.pg, schema, retired, projector, log,
                            state, bar,
                        )  # fmt: skip
                        break
                    except psycopg.errors.LockNotAvailable:
                        # a long reader held a table: nothing changed, the new version is
                        # still there; try again
                        if attempt == SWITCH_ATTEMPTS - 1:
                            raise
                        await state.set("building", force=True)
                        await asyncio.sleep(0.2 + 0.3 * random.random())
            await state.set("live", force=True, switched_at=datetime.now(UTC))
            resync = getattr(projector, "resync_side_stores", None)
            if resync is not None:
                await resync(pf.stores)
            after = await maintenance.checksum(pf.stores, projector)
            await state.set("retiring", force=True, checksum_before=before, checksum_after=after)
            result.update(checksum_before=before, checksum_after=after, retired_schema=retired)
            result["switch_s"] = round(time.perf_counter() - build_started - built_s, 2)
            result["total_s"] = round(time.perf_counter() - started, 2)
            if grace_s > 0:
                await asyncio.sleep(grace_s)  # queries planned before the switch finish
            async with pf.stores.pg.connection() as conn:
                await conn.execute(
                    sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(retired))
                )
            await state.set("done", force=True, finished_at=datetime.now(UTC))
            result["state"] = "done"
            _report(result, as_json, None, on_result)
            return 0
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await state.set("failed", force=True, error=f"{type(exc).__name__}: {exc}"[:2000])
                async with pf.stores.pg.connection() as conn:
                    await conn.execute(
                        sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
                    )
            raise


def _report(result: dict[str, Any], as_json: bool, hint: str | None, on_result: Any) -> None:
    if on_result is not None:
        on_result(result)
    if as_json:
        print(json.dumps(result))
        return
    print(
        f"rebuilt {result['projector']}: {result['records']} records in {result['build_s']} s"
        f" ({result['records_per_s']:,}/s)"
    )
    if "checksum_after" in result:
        same = result["checksum_before"] == result["checksum_after"]
        print(
            f"switched live; checksum before {result['checksum_before']} after"
            f" {result['checksum_after']}"
            + ("" if same else " (different: the log moved on, or the old version was stale)")
        )
    if hint:
        print(f"as-of copy in schema {result['schema']}; read it with: {hint}")
