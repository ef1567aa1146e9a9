"""core/db.py's pool check: no dead connection is handed out, and a busy pool is not
asked about on every checkout."""

from __future__ import annotations

import asyncio

import psycopg

from core.db import _handed_out, open_pool


async def _backends(admin: psycopg.AsyncConnection, pids: set[int]) -> set[int]:  # type: ignore[type-arg]
    cur = await admin.execute("SELECT pid FROM pg_stat_activity WHERE pid = ANY(%s)", (list(pids),))
    return {r[0] for r in await cur.fetchall()}


async def test_a_connection_the_server_ended_a_moment_ago_is_not_handed_out(
    db_uri: str,
) -> None:
    pool = open_pool(db_uri, min_size=2, max_size=2, name="t-check")
    await pool.open(wait=True)
    try:
        pids = set()
        for _ in range(4):  # both connections handed out just now: no check due by age
            async with pool.connection() as conn:
                pids.add(conn.info.backend_pid)
        async with await psycopg.AsyncConnection.connect(db_uri, autocommit=True) as admin:
            await admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) pid",
                                (list(pids),))  # fmt: skip
            for _ in range(200):
                if not await _backends(admin, pids):
                    break
                await asyncio.sleep(0.01)
        for _ in range(4):  # every checkout works: the ended ones were seen and replaced
            async with pool.connection() as conn:
                await conn.execute("SELECT 1")
                assert conn.info.backend_pid not in pids
    finally:
        await pool.close()


async def test_a_connection_in_steady_use_is_not_checked_each_time(db_uri: str) -> None:
    pool = open_pool(db_uri, min_size=1, max_size=1, name="t-busy")
    await pool.open(wait=True)
    try:
        async with pool.connection() as conn:
            await conn.execute("SELECT 1")
        async with await psycopg.AsyncConnection.connect(db_uri, autocommit=True) as admin:
            before = await _calls(admin, conn.info.backend_pid)
            for _ in range(20):
                async with pool.connection() as again:
                    assert again is conn
            # a check is an empty query: none ran, so the backend saw no statement at all
            assert await _calls(admin, conn.info.backend_pid) == before
        assert conn in _handed_out
    finally:
        await pool.close()


async def _calls(admin: psycopg.AsyncConnection, pid: int) -> object:  # type: ignore[type-arg]
    cur = await admin.execute(
        "SELECT query, state_change FROM pg_stat_activity WHERE pid = %s", (pid,)
    )
    return await cur.fetchone()
