"""A database crash is noticed, not looped on: a PostgreSQL server of the test's own is
stopped the way a crash stops it (``pg_ctl -m immediate``: no shutdown checkpoint,
crash recovery at the next start) and started again on the same data directory.

The embedded runner and the log listener keep running with bounded backoff and say
once what failed and what to do, and once that it answers again; ``/ready`` reports
the database down within seconds; after the restart the runner applies new events.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette

from api import errors, health, search
from api.context import AppContext
from core.db import migrate
from core.settings import Settings
from projections.base import Stores
from projections.playback import PlaybackProjector
from streams.embedded import EmbeddedLog
from streams.publisher import Publisher
from streams.runner import BACKOFF, EmbeddedRunner
from tests.conftest import TEST_IDENTITY
from tests.helpers import play

#: a connection is waited for this long before a call fails (the pools' default is 30 s)
POOL_TIMEOUT_S = 1.0
OUTAGE_S = 4.0


@dataclass
class OwnPostgres:
    """An embedded PostgreSQL that only this module uses, so it may be crashed."""

    server: Any
    admin_uri: str

    def uri(self, dbname: str) -> str:
        base, _, query = self.admin_uri.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{dbname}" + (f"?{query}" if query else "")

    def crash(self) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(
            ["-w", "-m", "immediate", "stop"],
            pgdata=self.server.pgdata,
            user=self.server.system_user,
            timeout=30,
        )

    def start(self) -> None:
        self.server.ensure_postgres_running()  # same data dir, same socket, crash recovery
        assert self.server.get_uri() == self.admin_uri


@pytest.fixture(scope="module")
def own_pg() -> Iterator[OwnPostgres]:
    from mgw import embedded

    # Not under pytest's base temp: every pytest session that starts (a parallel run)
    # makes /tmp/pytest-of-<user> private again, and the server, which runs as another
    # user when the tests run as root, could then not find its data dir to restart.
    root = Path(tempfile.mkdtemp(prefix="mgw-crash-"))
    pg = embedded.start_postgres(root)
    own = OwnPostgres(pg.server, pg.uri)
    try:
        with psycopg.connect(own.admin_uri, autocommit=True) as conn:
            conn.execute("CREATE DATABASE crash_template")
        migrate(own.uri("crash_template"))
        yield own
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)


_dbs = iter(range(1_000))


@pytest.fixture
def crash_db(own_pg: OwnPostgres) -> str:
    name = f"crash_{next(_dbs)}"
    with psycopg.connect(own_pg.admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE crash_template")
    return own_pg.uri(name)


@pytest.fixture
async def crash_stores(crash_db: str, redis_url: str) -> AsyncIterator[Stores]:
    import redis.asyncio as aioredis

    pool = AsyncConnectionPool(
        crash_db,
        min_size=1,
        max_size=4,
        timeout=POOL_TIMEOUT_S,
        open=False,
        kwargs={"autocommit": True},
        check=AsyncConnectionPool.check_connection,
    )
    await pool.open(wait=True)
    redis = aioredis.from_url(redis_url)
    try:
        yield Stores(pg=pool, redis=redis)
    finally:
        await redis.aclose()
        await pool.close()


@pytest.fixture
async def crash_log(crash_db: str) -> AsyncIterator[EmbeddedLog]:
    elog = await EmbeddedLog(crash_db, timeout=POOL_TIMEOUT_S).open()
    yield elog
    await elog.close()


async def _applied(stores: Stores) -> int:
    async with stores.pg.connection() as conn:
        cur = await conn.execute("SELECT coalesce(sum(event_count), 0) FROM playback_positions")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _until(check: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            if await check():
                return
        except Exception as exc:  # the database may still be coming back
            last = exc
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {timeout}s (last error: {last!r})")


def _loud(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]


def _said(caplog: pytest.LogCaptureFixture, logger: str, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == level]


async def test_runner_and_listener_back_off_through_a_crash_and_recover(
    own_pg: OwnPostgres,
    crash_stores: Stores,
    crash_log: EmbeddedLog,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="mgw")
    runner = EmbeddedRunner(crash_log, crash_stores, [PlaybackProjector()], linger_ms=0)
    loop = runner.loops[0]
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    pub = Publisher(crash_log)
    try:
        await pub.publish_many([play(f"u{i}", "c1", 600.0, seconds=i) for i in range(20)])
        await _until(lambda: _has(crash_stores, 20), "the first 20 events applied")

        await asyncio.to_thread(own_pg.crash)
        await asyncio.sleep(OUTAGE_S)
        # still running, retrying, never waiting longer than the cap
        assert not task.done()
        assert loop.failure is None
        assert loop.retry.failures >= 2, "the runner did not notice the crash"
        assert loop.retry.last_delay <= BACKOFF.cap
        # one line each says what failed and what to do; the retries go to DEBUG
        [runner_warning] = _loud(caplog, "mgw.runner")
        [listener_warning] = _loud(caplog, "mgw.log.embedded")
        for w in (runner_warning, listener_warning):
            text = w.getMessage()
            assert "PostgreSQL at" in text and "unreachable" in text, text
            assert "retrying with backoff up to" in text and "mgw up" in text, text
            assert w.exc_info is None  # a crash is not a bug: no traceback
        assert len(_said(caplog, "mgw.runner", logging.DEBUG)) >= 1
        retries = len(_said(caplog, "mgw.log.embedded", logging.DEBUG))
        # 0.1 s doubling to 5 s over the outage: a handful of attempts, not a busy loop
        assert 1 <= retries <= 20, retries

        await asyncio.to_thread(own_pg.start)

        async def published() -> bool:
            await pub.publish_many([play(f"v{i}", "c2", 900.0, seconds=i) for i in range(5)])
            return True

        await _until(published, "an append after the restart")
        await _until(lambda: _has(crash_stores, 25), "the new events applied")
        await _until(
            lambda: _async(bool(_said(caplog, "mgw.log.embedded", logging.INFO))),
            "the listener reconnected",
        )
        assert not task.done()
        # the end of the outage is said once too, and nothing louder came meanwhile
        assert any("answers again" in m for m in _said(caplog, "mgw.runner", logging.INFO))
        assert any("answers again" in m for m in _said(caplog, "mgw.log.embedded", logging.INFO))
        assert len(_loud(caplog, "mgw.runner")) == 1
        assert len(_loud(caplog, "mgw.log.embedded")) == 1
        assert loop.retry.failures == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_ready_reports_a_crashed_database_quickly(
    own_pg: OwnPostgres, crash_stores: Stores, crash_log: EmbeddedLog, tmp_path: Path
) -> None:
    settings = Settings(data_dir=tmp_path, database_url="unused", identity=TEST_IDENTITY)
    app = Starlette(
        routes=health.routes + search.routes,
        exception_handlers={
            errors.Problem: errors.problem_handler,
            Exception: errors.unhandled_handler,
        },
    )
    app.state.mgw = AppContext(settings, crash_log, crash_stores, Publisher(crash_log))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mgw") as client:
        up = await client.get("/ready")
        assert up.status_code == 200, up.text
        await asyncio.to_thread(own_pg.crash)
        try:
            # every check at once, each bounded: not their sum, not a pool's wait (a hang
            # guard, generous on purpose: tests assert no timings)
            down = await asyncio.wait_for(client.get("/ready"), 15)
            assert down.status_code == 503
            assert down.headers["Retry-After"] == str(health.RETRY_AFTER_S)
            body = down.json()
            assert body["status"] == "unavailable"
            assert body["dependencies"]["postgres"]["status"] == "down"
            assert body["dependencies"]["postgres"]["error"]
            assert body["dependencies"]["log"]["status"] == "down"
            assert body["dependencies"]["redis"]["status"] == "up"
            assert "error" in body["projectors"]
            # a route reading the database answers 503 with Retry-After, never hangs or 500s
            status = await asyncio.wait_for(client.get("/v1/search/status"), 15)
            assert status.status_code == 503, status.text
            assert status.headers["Retry-After"] == str(errors.RETRY_AFTER_S)
            assert "PostgreSQL" in status.json()["title"] + status.json().get("detail", "")
        finally:
            await asyncio.to_thread(own_pg.start)

        async def ready_again() -> bool:
            return (await client.get("/ready")).status_code == 200

        await _until(ready_again, "/ready answering 200 after the restart")


async def _has(stores: Stores, n: int) -> bool:
    return await _applied(stores) >= n


async def _async(value: bool) -> bool:
    return value


class _BrokenSideStores(PlaybackProjector):
    """Applies like the playback projector, under its own name and tables' checkpoints,
    then fails where no dead letter can catch it: a bug, not an outage."""

    name = "broken_playback"

    async def apply(self, conn: Any, batch: Any) -> Any:
        return []  # no rows: playback's own loop writes those

    async def sync_side_stores(
        self, stores: Any, conn: Any, applied: Any, redelivered: Any
    ) -> None:
        raise KeyError("a bug in sync_side_stores")


async def test_a_projector_failing_for_good_stops_alone_and_says_so(
    db_uri: str, stores: Stores, caplog: pytest.LogCaptureFixture
) -> None:
    from streams import runner as runner_module

    caplog.set_level(logging.DEBUG, logger="mgw")
    elog = await EmbeddedLog(db_uri).open()
    runner = EmbeddedRunner(elog, stores, [_BrokenSideStores(), PlaybackProjector()], linger_ms=0)
    broken, playback = runner.loops
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await Publisher(elog).publish_many(
            [play(f"u{i}", "c1", 60.0, seconds=i) for i in range(10)]
        )
        # 5 tries, 0.2 s doubling with full jitter: about 1.5 s, at most 3 s
        await _until(lambda: _async(broken.failure is not None), "the broken loop stopping", 15)
        await _until(lambda: _has(stores, 10), "the healthy projector applying everything")
        assert isinstance(broken.failure, KeyError)
        assert playback.failure is None and not task.done()  # the others keep running
        assert runner.stopped() == {"broken_playback": "KeyError: 'a bug in sync_side_stores'"}
        errors = _loud(caplog, "mgw.runner")
        # the first failure with its traceback, then the giving up, saying what to do
        assert len(errors) == 2, [e.getMessage() for e in errors]
        assert errors[0].exc_info is not None
        last = errors[1].getMessage()
        assert f"gave up after {runner_module.GIVE_UP_AFTER} failures" in last
        assert "read model falls behind" in last and "restarted" in last
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await elog.close()
