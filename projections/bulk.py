"""Bulk writes for projectors: binary COPY into a per-connection staging table.

Binding a batch as one array per column makes psycopg quote every element in Python
(about 2 µs each); binary COPY formats rows in C. A projector stages its batch with
``stage`` and then writes it with one INSERT ... SELECT (or UPDATE ... FROM) from the
staging table. Staging tables live in the session (``ON COMMIT DELETE ROWS``), so a
pooled connection creates each once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg import AsyncConnection


async def stage(
    conn: AsyncConnection[Any],
    table: str,
    like: str,
    columns: Sequence[str],
    types: Sequence[str],
    rows: Iterable[Sequence[Any]],
) -> None:
    """Fill the session's staging table ``table`` (shaped like ``like``) with ``rows``.
    Names come from code, never from input."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {table} (LIKE {like}) ON COMMIT DELETE ROWS"
    )
    await conn.execute(f"DELETE FROM {table}")  # a retried batch in one transaction reuses it
    async with conn.cursor().copy(
        f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.set_types(list(types))
        for row in rows:
            await copy.write_row(row)
