"""core/backoff.py: the delays, what counts as transient, and what a retrying loop logs."""

from __future__ import annotations

import asyncio
import logging

import psycopg
import pytest
import redis.exceptions

from core.backoff import Backoff, Outages, Retry, Stopped, describe, is_transient, pause
from streams.log import LogError, TransientLogError

LOG = logging.getLogger("mgw.test.backoff")


def test_ceilings_double_up_to_the_cap() -> None:
    b = Backoff(first=0.1, cap=1.0)
    assert [b.ceiling(n) for n in range(6)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert b.ceiling(10_000) == 1.0  # no float overflow on a long outage


def test_full_jitter_is_uniform_below_the_ceiling() -> None:
    b = Backoff(first=0.1, cap=1.0)
    assert b.delay(3, rand=lambda: 0.0) == 0.0
    assert b.delay(3, rand=lambda: 0.5) == pytest.approx(0.4)
    assert b.delay(9, rand=lambda: 0.999) == pytest.approx(0.999)
    assert all(0 <= d < b.ceiling(n) for n, d in zip(range(50), b.delays(), strict=False))


def test_without_jitter_the_delays_are_the_ceilings() -> None:
    poll = Backoff(first=0.002, cap=0.05, jitter=False)
    got = [d for _, d in zip(range(7), poll.delays(), strict=False)]
    assert got == pytest.approx([0.002, 0.004, 0.008, 0.016, 0.032, 0.05, 0.05])


def test_transient_or_not() -> None:
    assert is_transient(TransientLogError("broker away"))
    assert not is_transient(LogError("topic has 3 partitions"))
    assert is_transient(psycopg.OperationalError("connection refused"))
    assert is_transient(redis.exceptions.ConnectionError("gone"))
    assert is_transient(TimeoutError())
    assert is_transient(ConnectionResetError())
    assert not is_transient(psycopg.errors.UndefinedTable("no table"))
    assert not is_transient(ValueError("bug"))


def test_describe_names_the_server_without_credentials() -> None:
    f = describe(
        psycopg.OperationalError("connection failed: No such file"),
        postgres="postgresql://mgw:secret@db.example:6543/media",
    )
    assert f.subject == "PostgreSQL at db.example:6543/media"
    assert "unreachable" in f.detail and "mgw up" in f.hint
    assert "secret" not in f.subject + f.detail + f.hint
    # a LogError that wraps a lost connection is still about PostgreSQL
    try:
        try:
            raise psycopg.OperationalError("server closed the connection")
        except psycopg.OperationalError as exc:
            raise TransientLogError("read failed") from exc
    except TransientLogError as wrapped:
        assert describe(wrapped, postgres="dbname=x host=/tmp").subject.startswith("PostgreSQL")


def test_a_run_of_failures_is_logged_once_and_its_end_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    now = [0.0]
    outages = Outages(LOG, remind_s=60.0, clock=lambda: now[0])
    retry = Retry("loop", LOG, outages=outages, postgres="dbname=x host=/tmp", rand=lambda: 1.0)
    lost = psycopg.OperationalError("connection refused")
    delays = []
    for _ in range(200):
        now[0] += 0.25
        delay = retry.failed(lost)
        assert delay is not None
        delays.append(delay)
    assert max(delays) == retry.backoff.cap  # bounded
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()
    now[0] += 15  # past the reminder period: one more line, saying it is still failing
    retry.failed(lost)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2 and "still failing after 201 attempts" in warnings[1].getMessage()
    retry.succeeded()
    infos = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(infos) == 1 and "answers again" in infos[0].getMessage()
    retry.succeeded()  # no run: nothing more to say
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 1
    assert retry.failures == 0


def test_loops_sharing_outages_report_one_database_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    outages = Outages(LOG)
    loops = [Retry(f"projector p{i}", LOG, outages=outages, postgres="host=/tmp") for i in range(5)]
    for _ in range(10):
        for r in loops:
            r.failed(psycopg.OperationalError("connection refused"))
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
    for r in loops:
        r.succeeded()
    assert len([r for r in caplog.records if r.levelno == logging.INFO]) == 1


def test_errors_that_are_not_transient_are_given_up(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOG.name)
    retry = Retry("loop", LOG, give_up_after=3)
    assert retry.failed(ValueError("bug")) is not None
    assert retry.failed(ValueError("bug")) is not None
    assert retry.failed(ValueError("bug")) is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2  # the first failure (with its traceback), then the giving up
    assert errors[0].exc_info is not None and "gave up after 3" in errors[1].getMessage()
    # a transient failure in between starts the count again
    retry = Retry("loop", LOG, give_up_after=2)
    assert retry.failed(ValueError("bug")) is not None
    assert retry.failed(TransientLogError("away")) is not None
    assert retry.failed(ValueError("bug")) is not None


async def test_call_retries_until_it_works_and_stops_when_told() -> None:
    attempts = []

    async def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 4:
            raise ConnectionResetError("reset")
        return "done"

    retry = Retry("call", LOG, backoff=Backoff(first=0.001, cap=0.01))
    assert await retry.call(flaky) == "done"
    assert len(attempts) == 4 and retry.failures == 0

    async def never() -> None:
        raise TimeoutError

    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    with pytest.raises(Stopped):
        await Retry("call", LOG, backoff=Backoff(first=10, cap=10)).call(never, stop)

    async def broken() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await Retry("call", LOG, backoff=Backoff(0.001, 0.001), give_up_after=2).call(broken)


async def test_pause_ends_early_when_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, stop.set)
    started = loop.time()
    assert await pause(5.0, stop)
    assert loop.time() - started < 1.0
    assert not await pause(0.001)
