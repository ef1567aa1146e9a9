"""`mgw worker`: projectors as worker processes on Kafka.

The composition root for workers: it opens the stores and hands a pipeline factory to
the runtime, Faust (streams/faust_app.py, the default) or the confluent-kafka consumer
group (streams/kafka_group.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from core.db import migrate, open_pool
from core.gc_tuning import tune_for_batches
from core.settings import Settings
from core.topics import ALL_TOPICS
from mgw.platform import (
    open_qdrant,
    resolve_services,
    search_setup,
    start_background,
    stop_background,
)
from mgw.probe import Probe
from projections.base import Projector, Stores
from projections.registry import PROJECTORS, by_name
from streams.faust_app import make_app
from streams.kafka import KafkaLog
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import EmbeddedRunner, Shard

log = logging.getLogger("mgw.worker")
#: background steps of the projector a Faust or confluent worker runs (held, not collected)
_BACKGROUND: list[asyncio.Task[None]] = []


async def open_pipeline(settings: Settings, name: str) -> ProjectionPipeline:
    """Stores and log for one projector in a worker process (migrations already ran)."""
    assert settings.database_url and settings.redis_url and settings.kafka_bootstrap_servers
    projector = by_name(name)
    opened: list[Any] = []  # closers, so a failed start leaks nothing when it is retried
    try:
        pool = open_pool(settings.database_url, max_size=4)
        await pool.open(wait=True)
        opened.append(pool.close)
        redis = aioredis.from_url(settings.redis_url)
        opened.append(redis.aclose)
        # the vector store (Qdrant Edge admits one process): only where the projector needs it
        qdrant = None
        needs_vectors = "vectors" in projector.side_stores
        if needs_vectors and settings.vector_store == "qdrant":
            qdrant = await open_qdrant(settings, {})
            opened.append(qdrant.close)
        klog = await KafkaLog(settings.kafka_bootstrap_servers).open()  # for dead letters
        opened.append(klog.close)
        await klog.ensure_topics(ALL_TOPICS)
        stores = Stores(
            pg=pool, redis=redis, qdrant=qdrant, publisher=Publisher(klog), settings=settings
        )
        stores.search = search_setup(settings, stores, {}, with_vectors=needs_vectors)
        if stores.search.vectors is not None:
            opened.append(stores.search.vectors.close)
        await projector.prepare(stores)
        # its background step (the search vectors) lives as long as the worker's loop; a
        # pipeline opened again after a failure does not start a second one
        if not any(not t.done() for t in _BACKGROUND):
            _BACKGROUND[:] = start_background([projector], stores, asyncio.Event())
    except BaseException:
        for close in reversed(opened):
            with contextlib.suppress(Exception):
                await close()
        raise
    tune_for_batches()  # start-up is done: what is alive now lives for the process
    return ProjectionPipeline(projector, stores, klog)


def worker_argv(projector: str, runtime: str, shard: Shard = (0, 1)) -> list[str]:
    """The command line of one `mgw worker` process (used by `mgw up`, benches, tests)."""
    argv = [
        sys.executable,
        "-m",
        "mgw.cli",
        "worker",
        "--projector",
        projector,
        "--runtime",
        runtime,
    ]
    return argv + (["--shard", f"{shard[0]}/{shard[1]}"] if shard != (0, 1) else [])


def _probe(settings: Settings, projector_name: str) -> Probe:
    probe = Probe(projector_name)
    if settings.health_port:
        probe.serve(settings.host, settings.health_port)
    return probe


def run_worker(
    settings: Settings, projector_name: str, runtime: str = "faust", shard: Shard = (0, 1)
) -> int:
    """Run one projector's worker in this process until SIGINT/SIGTERM."""
    import faust

    probe = _probe(settings, projector_name)
    started: list[Any] = []
    if not settings.database_url or not settings.redis_url:
        # A worker on one machine may still use embedded PostgreSQL/Redis from the data dir.
        db, redis_url, _ = resolve_services(settings, started)
        settings = replace(settings, database_url=db, redis_url=redis_url)
    assert settings.database_url
    migrate(settings.database_url)  # before any event loop runs: it blocks
    if runtime == "embedded":
        try:
            asyncio.run(_run_embedded_worker(settings, projector_name, shard, probe))
            return 0
        finally:
            for s in started:
                s.stop()
    _ensure_topics(settings)
    if runtime == "confluent":
        try:
            return _run_group_worker(settings, projector_name, probe)
        finally:
            for s in started:
                s.stop()
    try:
        import uvloop  # measured: Faust's per-event dispatch runs about 17 % faster on it

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    app = make_app(
        settings, projector_name, lambda: probe.opened(open_pipeline(settings, projector_name))
    )
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
    from core.topics import ALL_TOPICS
    from streams.kafka import KafkaLog

    async def go() -> None:
        assert settings.kafka_bootstrap_servers
        klog = await KafkaLog(settings.kafka_bootstrap_servers).open()
        try:
            await klog.ensure_topics(ALL_TOPICS)
        finally:
            await klog.close()

    asyncio.run(go())


def run_workers(
    settings: Settings, projector_name: str | None, runtime: str = "faust", shard: Shard = (0, 1)
) -> int:
    """``mgw worker``: one projector here, or one child process per projector."""
    if projector_name:
        return run_worker(settings, projector_name, runtime, shard)
    if not settings.qdrant_url:
        log.warning(
            "QDRANT_URL is not set: Qdrant local mode admits one process, so only "
            "the catalog worker writes vectors; set QDRANT_URL for a fleet"
        )
    # one port each when probes are on: the first projector's worker on MGW_HEALTH_PORT,
    # the next on the port after it, in registry order
    children = [
        subprocess.Popen(
            worker_argv(p.name, runtime, shard),
            env={
                **os.environ,
                "MGW_HEALTH_PORT": str(settings.health_port + i if settings.health_port else 0),
            },
        )
        for i, p in enumerate(PROJECTORS)
    ]

    def forward(signum: int, _frame: Any) -> None:
        for c in children:
            if c.poll() is None:
                c.send_signal(signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)
    codes = [c.wait() for c in children]
    return max(codes, default=0)


def _run_group_worker(settings: Settings, projector_name: str, probe: Probe) -> int:
    from streams.kafka_group import GroupWorker

    async def main() -> None:
        worker = GroupWorker(settings, projector_name)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, worker.stop)
        pipeline = await probe.opened(open_pipeline(settings, projector_name))
        log.info("%s: confluent-kafka worker started", worker.group)
        await worker.run(pipeline)

    asyncio.run(main())
    return 0


async def _run_embedded_worker(
    settings: Settings, projector_name: str, shard: Shard, probe: Probe
) -> None:
    """One shard of a projector on the embedded (PostgreSQL) log, in its own process."""
    from mgw.platform import open_platform

    projector = by_name(projector_name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with_vectors = "vectors" in projector.side_stores
    async with open_platform(settings, with_vectors=with_vectors, pool_size=4) as pf:
        runner = EmbeddedRunner(
            pf.log,
            pf.stores,
            [projector],
            batch_size=settings.batch_size,
            linger_ms=settings.batch_linger_ms,
            shards={projector.name: shard},
        )
        log.info("%s: embedded worker, shard %d/%d", projector.name, *shard)
        background = start_background([projector], pf.stores, stop) if shard[0] == 0 else []
        probe.mark_ready()
        tune_for_batches()
        ready = os.environ.get(READY_ENV)
        if ready:  # the parent's /ready waits for every shard to get here
            await asyncio.to_thread(Path(ready).touch)
        try:
            await runner.run(stop)
        finally:
            stop.set()
            await stop_background(background)


def shardable(settings: Settings, projectors: Sequence[Projector]) -> list[Projector]:
    """Projectors that may run in several processes: on the embedded log, reading a
    topic with more than one partition (a second shard of a one-partition topic owns
    nothing), and not holding the embedded vector store (one process only)."""
    if settings.kafka_bootstrap_servers:
        return []  # on Kafka, scale with workers in the consumer group instead
    from core.topics import spec

    def partitioned(topic: str) -> bool:
        try:
            return spec(topic).partitions > 1
        except KeyError:  # a topic made at run time (tests): let its partitions decide
            return True

    return [
        p
        for p in projectors
        if getattr(p, "shardable", True)
        and any(partitioned(t) for t in p.topics)
        and ("vectors" not in p.side_stores or settings.vector_store != "edge")
    ]


def lanes(settings: Settings) -> dict[str, int]:
    """Loops per shardable projector inside one `mgw up` process (MGW_PROJECTOR_LANES),
    at most one per partition. None when the projectors run in several processes
    (``projector_processes`` > 1): the processes fill the cores already."""
    if settings.projector_processes > 1 or settings.projector_lanes < 2:
        return {}
    from core.topics import spec

    def partitions(topic: str) -> int:
        try:
            return spec(topic).partitions
        except KeyError:  # a topic made at run time (tests): the runner caps it
            return settings.projector_lanes

    return {
        p.name: min(settings.projector_lanes, max(partitions(t) for t in p.topics))
        for p in shardable(settings, PROJECTORS)
    }


#: where a shard process marks that it has begun reading (set by its supervisor)
READY_ENV = "MGW_READY_FILE"


class ShardSupervisor:
    """Shards 1..N-1 of each shardable projector as `mgw worker` children of `mgw up`
    (the parent runs shard 0/N). A child that dies is started again: its partitions
    would otherwise stop and reads waiting on them would time out."""

    def __init__(self, resolved: Settings, names: Sequence[str], processes: int) -> None:
        self.env = {
            **os.environ,
            "DATABASE_URL": resolved.database_url or "",
            "REDIS_URL": resolved.redis_url or "",
            "KAFKA_BOOTSTRAP_SERVERS": "",
            "MGW_DATA_DIR": str(resolved.data_dir),
            "MGW_BATCH_SIZE": str(resolved.batch_size),
            "MGW_LOG_LEVEL": resolved.log_level,
        }
        self.argvs = [
            worker_argv(name, "embedded", (i, processes))
            for name in names
            for i in range(1, processes)
        ]
        self.children: list[subprocess.Popen[bytes]] = []
        self._watch: asyncio.Task[None] | None = None
        run_dir = resolved.data_dir / "run"
        run_dir.mkdir(parents=True, exist_ok=True)
        self.ready_files = [run_dir / f"shard-{n}.ready" for n in range(len(self.argvs))]

    def start(self) -> None:
        self.children = [self._spawn(n) for n in range(len(self.argvs))]
        self._watch = asyncio.create_task(self._supervise(), name="shard-supervisor")

    def starting(self) -> list[str]:
        """The shard processes that have not begun reading yet ("playback 1/2", ...)."""
        return [
            f"{argv[argv.index('--projector') + 1]} {argv[-1]}"
            for argv, ready in zip(self.argvs, self.ready_files, strict=True)
            if not ready.exists()
        ]

    def _spawn(self, n: int) -> subprocess.Popen[bytes]:
        argv = self.argvs[n]
        self.ready_files[n].unlink(missing_ok=True)
        child = subprocess.Popen(argv, env={**self.env, READY_ENV: str(self.ready_files[n])})
        log.info("%s in process %d", " ".join(argv[-4:]), child.pid)
        return child

    async def _supervise(self) -> None:
        while True:
            # poll() is one waitpid(WNOHANG): checking often costs nothing, and every
            # second waited here is a second the shard's partitions stand still
            # (`mgw chaos kill-worker` measures the respawn)
            await asyncio.sleep(0.25)
            for i, child in enumerate(self.children):
                if child.poll() is not None:
                    log.warning(
                        "shard process %d exited with %s; starting it again",
                        child.pid,
                        child.returncode,
                    )
                    self.children[i] = self._spawn(i)

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        await asyncio.to_thread(stop_processes, self.children)


def stop_processes(children: Sequence[subprocess.Popen[bytes]], timeout: float = 15) -> None:
    for c in children:
        if c.poll() is None:
            c.send_signal(signal.SIGTERM)
    for c in children:
        try:
            c.wait(timeout)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
