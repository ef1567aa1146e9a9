"""Operator work on a read model: clear it for a replay, take its checksum."""

from __future__ import annotations

import hashlib
from typing import Any

from projections.base import Projector, Stores


async def clear(stores: Stores, projector: Projector) -> None:
    """Drop the read model's rows, checkpoints and watermarks, and its side stores."""
    async with stores.pg.connection() as conn, conn.transaction():
        for table in projector.tables:
            await conn.execute(f"TRUNCATE {table}")  # names come from code, not input
        await conn.execute(
            "DELETE FROM projection_checkpoints WHERE projector = %s", (projector.name,)
        )
        await conn.execute(
            "DELETE FROM projection_watermarks WHERE projector = %s", (projector.name,)
        )
    await projector.reset_side_stores(stores)
    await projector.prepare(stores)


async def checksum(stores: Stores, projector: Projector) -> str:
    """Order-independent digest of the read model's tables (and Redis, for playback)."""
    h = hashlib.sha256()
    async with stores.pg.connection() as conn:
        compared = getattr(projector, "checksum_columns", {})
        for table in projector.tables:
            # A projector may name the columns a checksum compares: annotations that depend
            # on where batch boundaries fell (when and why two ids were joined) are not state.
            cur = await conn.execute(
                f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), ''))"
                f" FROM (SELECT * FROM {table}) t"
                if table not in compared
                else f"SELECT count(*), md5(coalesce(string_agg(t::text, '|' ORDER BY t::text),"
                f" '')) FROM (SELECT {', '.join(compared[table])} FROM {table}) t"
            )
            row = await cur.fetchone()
            h.update(f"{table}:{row}".encode())
    if projector.name == "playback" and stores.redis is not None:
        from projections.playback import side_store_digest

        h.update((await side_store_digest(stores.redis)).encode())
    return h.hexdigest()[:16]


_REBUILD_COLUMNS = (
    "rebuild_id, projector, kind, schema_name, state, until_spec, records_done, records_total,"
    " started_at, updated_at, switched_at, finished_at, checksum_before, checksum_after, error"
)


async def rebuilds(
    conn: Any, projector: str | None = None, limit: int = 20, rebuild_id: str | None = None
) -> list[dict[str, Any]]:
    """Rebuilds (mgw rebuild), newest first, as rows of ``projection_rebuilds``."""
    cur = await conn.execute(
        f"SELECT {_REBUILD_COLUMNS} FROM projection_rebuilds"
        " WHERE (%(p)s::text IS NULL OR projector = %(p)s)"
        " AND (%(id)s::text IS NULL OR rebuild_id = %(id)s)"
        " ORDER BY started_at DESC LIMIT %(n)s",
        {"p": projector, "id": rebuild_id, "n": limit},
    )
    names = [c.name for c in cur.description]
    return [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
