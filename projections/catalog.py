"""Catalog read model: the ``content`` table and the Qdrant ``content`` collection.

Content events are keyed by content id, so all upserts of one title sit in one
partition in order: the last one in log order wins.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from domain.catalog import check_content, normalize_genres
from domain.discovery import DIMS, placeholder_embedding
from projections.base import Envelope, RejectedEvent, Stores
from streams.topics import CATALOG

COLLECTION = "content"
_POINT_NS = uuid.UUID("0f4c5a1e-3b8d-4f6a-9c2e-7d1b5e3a9f40")
_COLUMNS = (
    "content_id",
    "kind",
    "title",
    "original_title",
    "year",
    "runtime_min",
    "genres",
    "overview",
    "imdb_id",
    "tmdb_id",
    "series_id",
    "season",
    "episode",
    "updated_at",
    "last_event_id",
)


def point_id(content_id: str) -> str:
    """Qdrant ids must be UUIDs or integers; content ids are any string."""
    return str(uuid.uuid5(_POINT_NS, content_id))


class CatalogProjector:
    name = "catalog"
    topics = (CATALOG.name,)
    tables = ("content",)
    side_stores = ("qdrant",)

    def check(self, event: Envelope) -> None:
        if event.event_type != "ContentUpserted":
            raise RejectedEvent(f"catalog does not handle {event.event_type}")
        violation = check_content(event.payload)
        if violation:
            raise RejectedEvent(f"{violation.field}: {violation.message}")
        if event.key and event.key != event.payload["content_id"]:
            raise RejectedEvent("record key must equal content_id")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> list[str]:
        latest: dict[str, Envelope] = {}
        for e in batch:  # batch is in log order per partition; later wins
            latest[e.payload["content_id"]] = e
        cols: list[list[Any]] = [[] for _ in _COLUMNS]
        for cid, e in latest.items():
            p = e.payload
            ext = p.get("external_ids") or {}
            row = (
                cid,
                p["kind"],
                p["title"].strip(),
                p.get("original_title"),
                p.get("year"),
                p.get("runtime_min"),
                normalize_genres(p.get("genres") or []),
                p.get("overview"),
                ext.get("imdb"),
                ext.get("tmdb"),
                p.get("series_id"),
                p.get("season"),
                p.get("episode"),
                e.happened_at,
                e.event_id,
            )
            for col, v in zip(cols, row, strict=True):
                col.append(v)
        # genres is an array column: pass it as JSON and expand, unnest cannot take text[][]
        cols[6] = [json.dumps(g) for g in cols[6]]
        await conn.execute(
            "INSERT INTO content (" + ", ".join(_COLUMNS) + ")"
            " SELECT u.content_id, u.kind, u.title, u.original_title, u.year, u.runtime_min,"
            " ARRAY(SELECT jsonb_array_elements_text(u.genres::jsonb)), u.overview, u.imdb_id,"
            " u.tmdb_id, u.series_id, u.season, u.episode, u.updated_at,"
            " u.last_event_id"
            " FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::int[],"
            " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::int[], %s::int[],"
            " %s::timestamptz[], %s::text[]) AS u(" + ", ".join(_COLUMNS) + ")"
            " ON CONFLICT (content_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _COLUMNS[1:]),
            cols,
        )
        return list(latest)  # the content ids whose vectors must follow

    async def sync_side_stores(
        self,
        stores: Stores,
        conn: AsyncConnection[Any],
        applied: Any,
        redelivered: Sequence[Envelope],
    ) -> None:
        ids = list(set(applied or ()) | {e.payload["content_id"] for e in redelivered})
        if stores.qdrant is None or not ids:
            return
        from qdrant_client import models

        cur = await conn.execute(  # the batch's transaction: it sees the rows just written
            "SELECT content_id, kind, title, year, genres, overview FROM content"
            " WHERE content_id = ANY(%s)",
            (ids,),
        )
        rows = await cur.fetchall()
        points = [
            models.PointStruct(
                id=point_id(cid),
                vector=placeholder_embedding(title, genres, overview),
                payload={
                    "content_id": cid,
                    "kind": kind,
                    "title": title,
                    "year": year,
                    "genres": genres,
                },
            )
            for cid, kind, title, year, genres, overview in rows
        ]
        if points:
            await stores.qdrant.upsert(COLLECTION, points=points, wait=True)

    async def reset_side_stores(self, stores: Stores) -> None:
        if stores.qdrant is None:
            return
        if await stores.qdrant.collection_exists(COLLECTION):
            await stores.qdrant.delete_collection(COLLECTION)
        await self.prepare(stores)

    async def prepare(self, stores: Stores) -> None:
        if stores.qdrant is None:
            return
        from qdrant_client import models

        if not await stores.qdrant.collection_exists(COLLECTION):
            await stores.qdrant.create_collection(
                COLLECTION,
                vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE),
            )


# -- queries -----------------------------------------------------------------


async def get_content(pg: AsyncConnectionPool, content_id: str) -> dict[str, Any] | None:
    async with pg.connection() as conn:
        cur = await conn.execute(
            "SELECT content_id, kind, title, original_title, year, runtime_min, genres, overview,"
            " imdb_id, tmdb_id, series_id, season, episode, updated_at"
            " FROM content WHERE content_id = %s",
            (content_id,),
        )
        row = await cur.fetchone()
    if row is None:
        return None
    (
        cid,
        kind,
        title,
        orig,
        year,
        runtime,
        genres,
        overview,
        imdb,
        tmdb,
        series,
        season,
        episode,
        updated,
    ) = row
    doc: dict[str, Any] = {
        "id": cid,
        "kind": kind,
        "title": title,
        "original_title": orig,
        "year": year,
        "runtime_min": runtime,
        "genres": genres,
        "overview": overview,
        "external_ids": {"imdb": imdb, "tmdb": tmdb},
        "updated_at": updated,
    }
    if kind == "episode":
        doc.update(series_id=series, season=season, episode=episode)
    return doc
