"""Retrying: exponential backoff with a cap and full jitter, and what a retrying loop logs.

``Backoff`` is the pure part: attempt ``n`` (from 0) waits a random time in
``[0, min(cap, first * factor**n))`` ("full jitter", so loops that failed together do not
retry together); ``jitter=False`` gives the ceiling itself, for polls.

``Retry`` is the state of one loop that retries: how many failures in a row, how long
to wait next, and what the log says. The first failure of a run is logged once, saying
what failed and what to do (WARNING; ERROR with the traceback when the failure is not
transient), repeats go to DEBUG (with a reminder every ``remind_s``), and the recovery
is logged once. Transient failures (a lost or refused connection, a timeout, any
exception whose ``transient`` attribute is true, like ``streams.log.LogError``) are
retried for as long as it takes; others ``give_up_after`` failures in a row.
Several loops may share one ``Outages``: then a database that goes away is reported
once, not once per loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

T = TypeVar("T")
Rand = Callable[[], float]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delays: ``first``, ``first * factor``, ... never above ``cap`` seconds."""

    first: float = 0.2
    cap: float = 10.0
    factor: float = 2.0
    jitter: bool = True

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failure number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # first * factor**attempt overflows a float long before it matters: stop at the cap
        delay = self.first
        for _ in range(attempt):
            delay *= self.factor
            if delay >= self.cap:
                return self.cap
        return min(delay, self.cap)

    def delay(self, attempt: int, rand: Rand = random.random) -> float:
        """The wait after failure number ``attempt``: uniform in [0, ceiling) with jitter."""
        ceiling = self.ceiling(attempt)
        return ceiling * rand() if self.jitter else ceiling

    def delays(self, rand: Rand = random.random) -> Iterator[float]:
        """The waits after failures 0, 1, 2, ... (endless)."""
        attempt = 0
        while True:
            yield self.delay(attempt, rand)
            attempt += 1


def is_transient(exc: BaseException) -> bool:
    """Worth retrying as it is: the failure is in reaching something, not in the request.

    An exception with a boolean ``transient`` attribute (``streams.log.LogError``) decides
    for itself; otherwise lost, refused or timed-out connections to PostgreSQL (every
    ``OperationalError``, pool timeouts, deadlocks and serialization failures included),
    Redis or an HTTP service are transient, and so are ``ConnectionError`` and
    ``TimeoutError``.
    """
    flag = getattr(exc, "transient", None)
    if isinstance(flag, bool):
        return flag
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    import psycopg

    if isinstance(exc, psycopg.OperationalError):
        return True
    try:
        import redis.exceptions as redis_errors
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    else:
        if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
            return True
    try:
        import httpx
    except ImportError:  # pragma: no cover - httpx is a dependency
        pass
    else:
        if isinstance(exc, httpx.TransportError):
            return True
    return False


class Failure(NamedTuple):
    """What failed (``subject``, also the key under which loops share an outage), how
    (``detail``) and what to do about it (``hint``)."""

    subject: str
    detail: str
    hint: str


def postgres_address(conninfo: str) -> str:
    """Where a connection string points, without its credentials: ``host:port/dbname``."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conninfo)
    except Exception:
        return "(unparsable DATABASE_URL)"
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or "5432")
    dbname = str(params.get("dbname") or "")
    return f"{host}:{port}/{dbname}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _postgres_cause(exc: BaseException) -> BaseException | None:
    import psycopg

    seen: BaseException | None = exc
    for _ in range(5):  # the error itself, or what a LogError wraps
        if seen is None:
            return None
        if isinstance(seen, psycopg.Error):
            return seen
        seen = seen.__cause__
    return None


def describe(exc: BaseException, *, postgres: str | None = None) -> Failure:
    """What a transient failure means for an operator. ``postgres`` is the connection
    string the failing code used, to name the server."""
    pg = _postgres_cause(exc)
    if pg is not None:
        where = postgres_address(postgres) if postgres else "the database"
        sqlstate = getattr(pg, "sqlstate", None)
        # no SQLSTATE: the client could not reach the server at all; class 08 is a lost
        # connection, 57P0x a server shutting down or starting
        if sqlstate is None or sqlstate.startswith(("08", "57P")):
            from psycopg_pool import PoolTimeout

            busy = " or all its pooled connections are busy" if isinstance(pg, PoolTimeout) else ""
            return Failure(
                f"PostgreSQL at {where}",
                f"is unreachable{busy} ({_first_line(pg)})",
                "Check that the server is running: `mgw up` starts the embedded one from "
                "its data dir (<data dir>/postgres); otherwise start the server DATABASE_URL "
                "names.",
            )
        return Failure(
            f"PostgreSQL at {where}",
            f"refused the work ({_first_line(pg)})",
            "Usually clears by itself (a lock, a deadlock, a cancelled statement); if it "
            "does not, see the server log.",
        )
    try:
        import redis.exceptions as redis_errors
    except ImportError:  # pragma: no cover - redis is a dependency
        pass
    else:
        if isinstance(exc, redis_errors.RedisError):
            return Failure(
                "Redis",
                f"is unreachable ({_first_line(exc)})",
                "Check that the server is running: `mgw up` starts the embedded one from "
                "its data dir; otherwise start the server REDIS_URL names.",
            )
    if isinstance(getattr(exc, "transient", None), bool):
        return Failure(
            "the event log",
            f"failed ({_first_line(exc)})",
            "On Kafka, check that the brokers in KAFKA_BOOTSTRAP_SERVERS run.",
        )
    return Failure(type(exc).__name__, f"failed ({_first_line(exc)})", "")


@dataclass(slots=True)
class _Run:
    since: float
    failures: int
    logged_at: float


class Outages:
    """Failure runs a group of loops reports, keyed by what failed: each run is told
    once when it starts (again every ``remind_s`` while it lasts) and once when it ends."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        remind_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.remind_s = remind_s
        self.clock = clock
        self._runs: dict[str, _Run] = {}

    def failing(self, key: str) -> bool:
        return key in self._runs

    def failed(
        self, key: str, message: str, *, level: int, exc: BaseException | None = None
    ) -> None:
        now = self.clock()
        run = self._runs.get(key)
        if run is None:
            self._runs[key] = _Run(now, 1, now)
            self.logger.log(level, "%s", message, exc_info=exc)
            return
        run.failures += 1
        if now - run.logged_at >= self.remind_s:
            run.logged_at = now
            self.logger.log(
                level,
                "still failing after %d attempts in %.0fs: %s",
                run.failures,
                now - run.since,
                message,
            )
        else:
            self.logger.debug("%s (failure %d)", message, run.failures)

    def recovered(self, key: str, message: str) -> None:
        run = self._runs.pop(key, None)
        if run is not None:
            self.logger.info(
                "%s after %.1fs (%d failed attempts)",
                message,
                self.clock() - run.since,
                run.failures,
            )

    def forget(self, key: str) -> None:
        self._runs.pop(key, None)


class Retry:
    """The failures in a row of one loop: ``failed(exc)`` logs and returns how long to
    wait (None: give up), ``succeeded()`` ends the run.

    ``what`` names the loop in the log ("projector playback"). ``transient`` decides what
    is retried for as long as it takes (default ``is_transient``); anything else is given
    up after ``give_up_after`` failures in a row (None: never), and the log says
    ``gives_up``: what that means and what to do. ``explain`` may describe a failure
    better than ``describe`` does (return None to let it)."""

    def __init__(
        self,
        what: str,
        logger: logging.Logger,
        *,
        backoff: Backoff | None = None,
        transient: Callable[[BaseException], bool] = is_transient,
        give_up_after: int | None = 5,
        postgres: str | None = None,
        outages: Outages | None = None,
        explain: Callable[[BaseException], Failure | None] | None = None,
        gives_up: str = "fix the cause and restart",
        rand: Rand = random.random,
    ) -> None:
        self.what = what
        self.logger = logger
        self.backoff = backoff or Backoff()
        self.transient = transient
        self.give_up_after = give_up_after
        self.postgres = postgres
        self.outages = outages or Outages(logger)
        self.explain = explain
        self.gives_up = gives_up
        self.rand = rand
        self.failures = 0  # in a row, of any kind
        self.hard_failures = 0  # in a row, not transient
        self.last_delay = 0.0
        self._keys: dict[str, str] = {}  # outage key -> what to say when it ends

    def failed(self, exc: BaseException) -> float | None:
        self.failures += 1
        cap = f"{self.backoff.cap:g}s"
        if self.transient(exc):
            self.hard_failures = 0
            f = (self.explain(exc) if self.explain else None) or describe(
                exc, postgres=self.postgres
            )
            key = f.subject
            message = f"{self.what}: {f.subject} {f.detail}; retrying with backoff up to {cap}"
            message += f". {f.hint}" if f.hint else ""
            self._keys[key] = f"{self.what}: {f.subject} answers again"
            self.last_delay = self.backoff.delay(self.failures - 1, self.rand)
            self.outages.failed(key, message, level=logging.WARNING)
            return self.last_delay
        self.hard_failures += 1
        key = f"{self.what} (error)"
        detail = _first_line(exc)
        if self.give_up_after is not None and self.hard_failures >= self.give_up_after:
            self.outages.forget(key)
            self._keys.pop(key, None)
            self.logger.error(
                "%s: gave up after %d failures in a row (%s); this is not a connection "
                "problem, so retrying will not help: %s",
                self.what,
                self.hard_failures,
                detail,
                self.gives_up,
                exc_info=exc,
            )
            return None
        left = (
            f"; giving up after {self.give_up_after - self.hard_failures} more"
            if self.give_up_after is not None
            else ""
        )
        self._keys[key] = f"{self.what}: works again"
        self.last_delay = self.backoff.delay(self.failures - 1, self.rand)
        self.outages.failed(
            key,
            f"{self.what}: failed ({detail}); retrying with backoff up to {cap}{left}",
            level=logging.ERROR,
            exc=exc,
        )
        return self.last_delay

    def succeeded(self) -> None:
        if self.failures:
            for key, message in self._keys.items():
                self.outages.recovered(key, message)
            self._keys.clear()
        self.failures = self.hard_failures = 0

    async def call(self, fn: Callable[[], Awaitable[T]], stop: asyncio.Event | None = None) -> T:
        """``await fn()`` until it returns, waiting between failures. Raises the failure
        when giving up, and ``Stopped`` when ``stop`` is set while waiting."""
        while True:
            try:
                result = await fn()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.failed(exc)
                if delay is None:
                    raise
                if await pause(delay, stop):
                    raise Stopped from exc
                continue
            self.succeeded()
            return result


class Stopped(Exception):
    """A retry loop was told to stop while it waited."""


async def pause(delay: float, stop: asyncio.Event | None = None) -> bool:
    """Sleep ``delay`` seconds, or less if ``stop`` is set meanwhile; True if it is."""
    if stop is None:
        await asyncio.sleep(delay)
        return False
    if stop.is_set():
        return True
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)
    return stop.is_set()
