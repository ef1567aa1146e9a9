"""Query functions for the content resource: one canonical title, following merges,
with its sources, availability, quality score and parental rating (the catalog
projection's tables)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from domain.catalog.quality import DEFAULT_HALF_LIFE_DAYS, quality_score
from projections.availability import offers_for
from projections.base import fetch_rows
from projections.catalog import EDITORIAL


async def canonical_id(conn: AsyncConnection[Any], content_id: str) -> str:
    """The id a (possibly merged) content id reads as now."""
    cur = await conn.execute(
        "SELECT into_id FROM content_merges WHERE merged_id = %s", (content_id,)
    )
    row = await cur.fetchone()
    return content_id if row is None else str(row[0])


async def series_rating(conn: AsyncConnection[Any], series_id: str) -> str | None:
    """An episode without a rating of its own is rated as its series."""
    rows = await fetch_rows(conn, "SELECT rating FROM content WHERE content_id = %s", (series_id,))
    return rows[0][0] if rows else None


async def ratings_of(conn: AsyncConnection[Any], content_ids: list[str]) -> dict[str, str | None]:
    """The rating of each title (canonical spelling; None: unrated), an episode without
    its own rated as its series; ids that do not exist are left out."""
    rows = await fetch_rows(
        conn,
        "SELECT c.content_id, coalesce(c.rating, s.rating) FROM content c"
        " LEFT JOIN content_merges m ON m.merged_id = c.series_id"
        " LEFT JOIN content s ON s.content_id = coalesce(m.into_id, c.series_id)"
        " WHERE c.content_id = ANY(%s)",
        (content_ids,),
    )
    return {r[0]: r[1] for r in rows}


async def get_content(
    pg: AsyncConnectionPool,
    content_id: str,
    *,
    now: datetime,
    region: str | None = None,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> dict[str, Any] | None:
    """The canonical title, following merges, with its sources, availability (in one
    region, or all) and quality score."""
    async with pg.connection() as conn:
        cid = await canonical_id(conn, content_id)
        cur = await conn.execute(
            "SELECT content_id, kind, title, original_title, year, runtime_min, genres, overview,"
            " imdb_id, tmdb_id, series_id, season, episode, updated_at, platforms, source_count,"
            " completeness, agreement, first_seen, rating FROM content WHERE content_id = %s",
            (cid,),
        )
        row = await cur.fetchone()
        if row is None:
            return None
        sources = await fetch_rows(
            conn,
            "SELECT platform, platform_id FROM platform_titles WHERE content_id = %s"
            " ORDER BY platform, platform_id",
            (cid,),
        )
        merged_from = [
            r[0]
            for r in await fetch_rows(
                conn,
                "SELECT merged_id FROM content_merges WHERE into_id = %s ORDER BY merged_id",
                (cid,),
            )
        ]
        plays_row = await (
            await conn.execute(
                "SELECT count(*) FROM playback_positions WHERE content_id = ANY(%s)",
                ([cid, *merged_from],),
            )
        ).fetchone()
        offers = await offers_for(conn, cid, region)
        series = await canonical_id(conn, row[10]) if row[10] else None
        rating = row[19]
        if rating is None and series is not None:
            rating = await series_rating(conn, series)
    (
        _, kind, title, orig, year, runtime, genres, overview, imdb, tmdb, _, season,
        episode, updated, platforms, source_count, completeness, agreement, first_seen, _,
    ) = row  # fmt: skip
    platform_ids: dict[str, list[str]] = {}
    for plat, pid in sources:
        if plat != EDITORIAL:
            platform_ids.setdefault(plat, []).append(pid)
    quality = quality_score(
        completeness=completeness,
        agreement=agreement,
        source_count=source_count,
        plays=int(plays_row[0]) if plays_row else 0,
        first_seen=first_seen or updated,
        now=now,
        half_life_days=half_life_days,
    )
    doc: dict[str, Any] = {
        "id": cid,
        "kind": kind,
        "title": title,
        "original_title": orig,
        "year": year,
        "runtime_min": runtime,
        "genres": genres,
        "overview": overview,
        "rating": rating,
        "external_ids": {"imdb": imdb, "tmdb": tmdb},
        "platforms": platforms,
        "platform_ids": platform_ids,
        "merged_ids": merged_from,
        "quality": quality.as_dict(),
        "availability": [o.as_dict(now) for o in offers],
        "first_seen": (first_seen or updated).isoformat(),
        "updated_at": updated.isoformat(),
    }
    if kind == "episode":
        doc.update(series_id=series, season=season, episode=episode)
    return doc
