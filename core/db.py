"""PostgreSQL connections and schema migrations.

Migrations are the numbered ``ops/migrations/*.sql`` files, applied once each,
in order, under an advisory lock so two processes starting together do not
race. Each file's sha256 is recorded as it runs: an applied file edited later is
refused by name (docs/operations/migrations.md).
"""

from __future__ import annotations

import hashlib
import logging
import select
import time
import weakref
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "ops" / "migrations"
_MIGRATION_LOCK = 0x6D6777  # "mgw"

log = logging.getLogger("mgw.db")


class MigrationEdited(RuntimeError):
    """An applied migration's file no longer has the bytes that ran."""

    def __init__(self, edited: list[tuple[str, str, str]]) -> None:
        self.edited = edited
        names = ", ".join(
            f"{n} (applied {old[:12]}, file now {new[:12]})" for n, old, new in edited
        )
        super().__init__(
            f"applied migration(s) edited since they ran: {names}. Put the file back as it was"
            " (git checkout) and write the change as a new migration; or, if the edit changes"
            " nothing that ran, accept it with `mgw migrate up --allow-edited`"
        )


def file_checksum(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def ensure_migrations_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ("
        " name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    # sha256 of the file as it ran; NULL for rows applied before checksums were kept
    conn.execute("ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS checksum text")


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[str, tuple[Any, str | None]]:
    """name -> (applied_at, checksum) for every recorded migration."""
    rows = conn.execute("SELECT name, applied_at, checksum FROM schema_migrations").fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def migrate(
    conninfo: str, directory: Path = MIGRATIONS_DIR, *, allow_edited: bool = False
) -> list[str]:
    """Apply pending migrations; returns the names applied now.

    Refuses (MigrationEdited) when a file that already ran has changed since, unless
    ``allow_edited``, which records the file's new checksum without running it again. A
    row from before checksums were kept takes the file's checksum as it is now."""
    applied_now: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            ensure_migrations_table(conn)
            done = applied_migrations(conn)
            files = migration_files(directory)
            sums = {p.name: file_checksum(p) for p in files}
            edited = [
                (n, old, sums[n])
                for n, (_, old) in sorted(done.items())
                if n in sums and old is not None and old != sums[n]
            ]
            if edited and not allow_edited:
                raise MigrationEdited(edited)
            for n, (_, old) in done.items():
                if n in sums and old != sums[n]:
                    conn.execute(
                        "UPDATE schema_migrations SET checksum = %s WHERE name = %s", (sums[n], n)
                    )
            for path in files:
                if path.name in done:
                    continue
                with conn.transaction():
                    conn.execute(path.read_text().encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (name, checksum) VALUES (%s, %s)",
                        (path.name, sums[path.name]),
                    )
                applied_now.append(path.name)
                log.info("applied migration %s", path.name)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


#: a connection handed out this recently is known to be alive, unless the server has
#: said something on it since (see check_if_idle)
CHECK_AFTER_IDLE_S = 1.0
_handed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


def _has_news(conn: psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection's socket has something to read: a pooled connection is
    sent nothing between queries unless the server is ending it (an administrator's
    terminate, a shutdown: an error message and EOF) or is gone (EOF, reset)."""
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, psycopg.Error):
        return True


async def check_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    """A pool's ``check``. After a database restart the pool would otherwise hand out
    dead connections, once each, and every caller would fail once; but asking the
    server on every checkout is a round trip per checkout (about 1 % of a busy API
    process, and one more wait before each group commit of the log). So the server is
    asked only about a connection that sat in the pool for over a second, or whose
    socket has something to read (which a live idle connection never has); one used a
    moment ago with a quiet socket is handed out as it is."""
    now = time.monotonic()
    last = _handed_out.get(conn)
    if last is None or now - last > CHECK_AFTER_IDLE_S or _has_news(conn):
        await AsyncConnectionPool.check_connection(conn)
    _handed_out[conn] = now


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
        check=check_if_idle,
        # a request waits at most this long for a connection, then answers 503 (api/errors):
        # a database that is down or saturated must not leave requests hanging for 30 s
        timeout=5.0,
    )
