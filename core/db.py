"""PostgreSQL connections and schema migrations.

Migrations are the numbered ``ops/migrations/*.sql`` files, applied once each,
in order, under an advisory lock so two processes starting together do not
race.
"""

from __future__ import annotations

import logging
from pathlib import Path

import psycopg
from psycopg_pool import AsyncConnectionPool

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "ops" / "migrations"
_MIGRATION_LOCK = 0x6D6777  # "mgw"

log = logging.getLogger("mgw.db")


def migrate(conninfo: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; returns the names applied now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for path in sorted(directory.glob("*.sql")):
                if path.name in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text().encode())
                    conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (path.name,))
                applied_now.append(path.name)
                log.info("applied migration %s", path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


def open_pool(
    conninfo: str, *, min_size: int = 1, max_size: int = 8, name: str = "mgw"
) -> AsyncConnectionPool:
    return AsyncConnectionPool(
        conninfo,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=name,
        kwargs={"autocommit": True},
        # Check a connection before handing it out: after a database restart the pool
        # would otherwise give out dead ones, once each, and every caller would fail once.
        check=AsyncConnectionPool.check_connection,
        # a request waits at most this long for a connection, then answers 503 (api/errors):
        # a database that is down or saturated must not leave requests hanging for 30 s
        timeout=5.0,
    )
