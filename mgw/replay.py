"""`mgw replay PROJECTOR`: rebuild one read model from the whole log.

A shardable projector (mgw/worker.py ``shardable``: its topics have several partitions)
is replayed by one process per core over disjoint partitions, as `mgw up
--projector-processes` and `mgw rebuild` run it. One process alternates Python work
(read, decode, fold) with waits on PostgreSQL and leaves a core idle a third of the
time; two processes on two cores replayed the playback projection at 92k events/s
against 59k for one (bench/projection_throughput.py, 200,000 events).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.connection
import multiprocessing.forkserver
import os
import time
from collections.abc import Callable
from typing import Any

from tqdm import tqdm

from core.gc_tuning import tune_for_batches
from core.settings import Settings
from mgw.platform import open_platform
from projections import maintenance
from projections.base import Projector, Stores
from projections.registry import by_name
from streams.processing import BatchResult, ProjectionPipeline, load_watermarks
from streams.runner import ProjectorLoop, Shard

#: records per replay batch: nobody waits on a replay's read model, so batches may be large;
#: a larger batch folds more of one key's events into one row (fewer rows to write)
REPLAY_BATCH_SIZE = 50_000

#: processes replaying a shardable projector by default: one per core
REPLAY_PROCESSES = os.cpu_count() or 1

#: told how many records the replay has read so far
Progress = Callable[[int], None]


async def run_replay(
    settings: Settings,
    name: str,
    *,
    progress: bool = True,
    batch_size: int | None = None,
    processes: int | None = None,
) -> int:
    try:
        projector = by_name(name)
    except KeyError as exc:
        print(exc.args[0])
        return 2
    if getattr(projector, "shardable", True):
        start_workers()  # its imports overlap the checksum and the clear
    async with open_platform(settings) as pf:
        before = await maintenance.checksum(pf.stores, projector)
        total = 0
        for topic in projector.topics:
            total += sum((await pf.log.end_offsets(topic)).values())
        await maintenance.clear(pf.stores, projector)
        n = replay_processes(pf.resolved, projector, pf.log, processes)
        started = time.perf_counter()
        with tqdm(total=total, desc=f"replay {name}", unit="rec", disable=not progress) as bar:

            def advance(done: int) -> None:
                bar.update(max(0, done - bar.n))

            applied = await replay(
                pf.resolved,
                projector,
                pf.stores,
                pf.log,
                batch_size=batch_size or REPLAY_BATCH_SIZE,
                processes=n,
                progress=advance,
            )
        elapsed = time.perf_counter() - started
        after = await maintenance.checksum(pf.stores, projector)
        same = "identical" if before == after else "DIFFERENT (was the projection stale?)"
        shown = f" by {n} processes" if n > 1 else ""
        print(
            f"replayed {name}: {applied} records applied in {elapsed:.1f}s{shown} "
            f"({applied / max(elapsed, 1e-9):,.0f}/s)"
        )
        print(f"checksum before {before} after {after}: {same}")
    return 0


def replay_processes(
    settings: Settings, projector: Projector, log_: Any, wanted: int | None
) -> int:
    """How many processes replay ``projector``: ``wanted`` (default one per core), never
    more than its topics have partitions, and one where sharding does not apply."""
    from mgw.worker import shardable

    if not shardable(settings, [projector]):
        return 1
    partitions = min(log_.partitions(t) for t in projector.topics)
    return max(1, min(wanted or REPLAY_PROCESSES, partitions))


async def replay(
    settings: Settings,
    projector: Projector,
    stores: Stores,
    log_: Any,
    *,
    batch_size: int = REPLAY_BATCH_SIZE,
    processes: int = 1,
    progress: Progress | None = None,
) -> int:
    """Apply the whole log to a cleared projection; the records applied.

    ``settings`` must name the services (``database_url``, ``redis_url``) when
    ``processes`` > 1: each shard process opens its own connections. No dead letters are
    sent again and no events are derived (the first run did both; the same log derives
    the same events)."""
    tune_for_batches()
    if processes <= 1:
        loop = _loop(projector, stores, log_, batch_size, (0, 1))
        done = 0

        def advance(result: BatchResult) -> None:
            nonlocal done
            done += result.applied + result.skipped + result.dead_letters
            if progress is not None:
                progress(done)

        return await loop.catch_up(advance)
    return await _replay_sharded(settings, projector, stores, log_, batch_size, processes, progress)


async def _replay_sharded(
    settings: Settings,
    projector: Projector,
    stores: Stores,
    log_: Any,
    batch_size: int,
    n: int,
    progress: Progress | None,
) -> int:
    """Shard 0 here, on this process's connections (it starts at once); the others in
    processes of their own, started first."""
    ctx = _workers()
    results = ctx.SimpleQueue()
    procs = [
        ctx.Process(
            target=_shard_main,
            args=(settings, projector.name, (i, n), batch_size, results),
            name=f"replay-{projector.name}-{i}",
        )
        for i in range(1, n)
    ]
    for p in procs:
        p.start()
    try:
        here = asyncio.ensure_future(_loop(projector, stores, log_, batch_size, (0, n)).catch_up())
        while not here.done():
            await asyncio.wait({here}, timeout=0.5)
            if progress is not None:
                progress(await _done(stores, projector.name))
        applied = here.result()
        sentinels = [p.sentinel for p in procs]
        while any(p.is_alive() for p in procs):
            # woken the moment a shard exits, not at the next tick of a poll
            await asyncio.to_thread(multiprocessing.connection.wait, sentinels, 0.5)
            if progress is not None:
                progress(await _done(stores, projector.name))
        for p in procs:
            p.join()
        failed = [p.name for p in procs if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"replay shards failed: {', '.join(failed)} (see their log)")
        if progress is not None:
            progress(await _done(stores, projector.name))
        for _ in procs:
            applied += int(results.get())
        return applied
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(10)


def _loop(
    projector: Projector, stores: Stores, log_: Any, batch_size: int, shard: Shard
) -> ProjectorLoop:
    return ProjectorLoop(
        ProjectionPipeline(projector, stores, log_, dead_letters=False, emit=False),
        log_,
        batch_size=batch_size,
        linger_ms=0,
        shard=shard,
    )


async def _done(stores: Stores, name: str) -> int:
    """Records the shards have read so far, from the watermarks they commit."""
    return sum((await load_watermarks(stores, name)).values())


def start_workers() -> None:
    """Start the server shard processes fork from, ahead of the replay."""
    _workers()
    multiprocessing.forkserver.ensure_running()


def _workers() -> Any:
    """Shard processes fork from a server that has imported this module (a spawned
    process spends most of a second importing; forking the caller would copy its event
    loop and threads)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


def _shard_main(settings: Settings, name: str, shard: Shard, batch_size: int, out: Any) -> None:
    out.put(asyncio.run(_replay_shard(settings, name, shard, batch_size)))


async def _replay_shard(settings: Settings, name: str, shard: Shard, batch_size: int) -> int:
    """One shard of a replay: the partitions ``p % n == i`` of the projector's topics."""
    import redis.asyncio as aioredis

    from core.db import open_pool
    from mgw.platform import open_log

    assert settings.database_url and settings.redis_url
    projector = by_name(name)
    log_ = await open_log(settings, settings.database_url, {})
    pool = open_pool(settings.database_url, max_size=2, name=f"replay-{name}-{shard[0]}")
    await pool.open(wait=True)
    redis = aioredis.from_url(settings.redis_url)
    try:
        tune_for_batches()
        stores = Stores(pg=pool, redis=redis, settings=settings)
        return await _loop(projector, stores, log_, batch_size, shard).catch_up()
    finally:
        await redis.aclose()
        await pool.close()
        await log_.close()
