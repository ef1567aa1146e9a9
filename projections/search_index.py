"""The search documents read model: the ``search`` projector and its background step.

The catalog's tables (``content``, ``platform_titles``, ``availability``) queue every
title they touch in ``search_queue``, by trigger, inside the upstream projector's own
transaction: no catalog change can commit without its title queued. The ``search``
projector reads the same topics as those projectors (catalog, resolution, availability);
for a batch it waits until the upstream projectors' watermarks cover it, then rebuilds the
queued titles' documents (folded title, weighted tsvector, offer keys, quality,
popularity) and dequeues them, in the pipeline's transaction with its checkpoint. So its
watermark means what every watermark means: a consistency token from a catalog write is
in the search documents once ``search`` covers it, and ``mgw replay search`` rebuilds them.

Vectors are the background step of the same projector (about 85 titles per second with
the default model on two cores, 100 times slower than documents): it embeds the documents
whose text changed since their vector was made, most popular first, from the embedding
cache in the data dir when that text was embedded before, and writes them to the vector
store (projections/search_vectors.py). Search uses vectors as they arrive. The same step
folds plays into popularity, re-queues titles whose offers start or end with time, and
drains the queue when no event comes to do it (after a catalog replay); it lives in
projections/search_embedding.py.

A crash in either part rolls back or repeats idempotent work: a drain locks the queue rows
it takes (skipping locked ones, so drains and catalog writers never deadlock), and the row goes
only if its ``seq`` is still the one read, and a vector is recorded only for the text it was
computed from. One background step runs at a time (an advisory lock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.topics import AVAILABILITY, CATALOG, RESOLUTION
from domain.catalog.quality import quality_score
from domain.discovery.documents import embedding_text, fold, offer_keys, popularity, text_hash
from projections.base import Envelope, Stores, fetch_rows
from projections.search_vectors import VectorStore

log = logging.getLogger("mgw.search.indexer")

_DOC_COLS = (
    "content_id", "kind", "title", "title_norm", "original_title", "year", "genres",
    "people", "rating", "imdb_id", "tmdb_id", "offer_keys", "platforms", "quality",
    "popularity", "first_seen", "alt_titles", "overview", "keywords", "embed_text",
    "text_hash",
)  # fmt: skip
#: which projector's tables a topic's events land in: the documents are read from them
UPSTREAM = {CATALOG.name: "catalog", RESOLUTION.name: "catalog", AVAILABILITY.name: "availability"}


class UpstreamBehind(TimeoutError):
    """The catalog's projectors have not applied this batch yet. A timeout, so the pipeline
    treats it as transient: the batch is retried, never dead-lettered."""


def payload(row: dict[str, Any]) -> dict[str, Any]:
    """The filter fields a vector store keeps beside a vector."""
    return {k: row[k] for k in ("kind", "genres", "people", "year", "rating", "offer_keys")}


@dataclass
class SearchSetup:
    """What the search read model needs besides connections (composed in mgw/)."""

    vectors: VectorStore | None = None
    embedder: Callable[[], Any] | None = None
    cache_path: Path | None = None
    half_life_days: float = 14.0
    #: run the background step (vectors, popularity, time sweeps) where the projector runs
    background: bool = True


def document(r: tuple[Any, ...], now: datetime, half_life_days: float) -> dict[str, Any]:
    (cid, kind, title, orig, year, genres, overview, imdb, tmdb, first_seen, updated,
     source_count, completeness, agreement, alt_titles, offers, plays, people,
     keywords, rating) = r  # fmt: skip
    q = quality_score(
        completeness=completeness, agreement=agreement, source_count=source_count,
        plays=plays, first_seen=first_seen or updated, now=now,
        half_life_days=half_life_days,
    )  # fmt: skip
    keys = offer_keys(tuple(o.split("|", 2)) for o in offers or ())
    alts = sorted({a for a in alt_titles or () if a and fold(a) != fold(title)})
    keywords = sorted(keywords or ())
    text = embedding_text(title, orig, genres, overview, keywords)
    return {
        "content_id": cid, "kind": kind, "title": title, "title_norm": fold(title),
        "original_title": orig, "year": year, "genres": list(genres),
        "people": sorted(people or ()),
        "rating": rating, "imdb_id": imdb, "tmdb_id": tmdb, "offer_keys": keys,
        "platforms": sorted({k.split("|")[1] for k in keys} - {"*"}),
        "quality": q.base, "popularity": popularity(plays),
        "first_seen": first_seen or updated, "alt_titles": " ".join(alts)[:4000],
        "overview": overview or "", "keywords": " ".join(keywords)[:4000],
        "embed_text": text, "text_hash": text_hash(text),
    }  # fmt: skip


#: held by a drain for its transaction: the projector waits for it, the background step
#: only tries. SKIP LOCKED alone would let the projector pass over titles the background
#: step is rebuilding and report a batch applied (a replay finished) before they exist.
DRAIN_LOCK = 0x6D677764  # "mgwd"


async def hold_drain(conn: AsyncConnection[Any], *, wait: bool) -> bool:
    """Take the drain lock for the caller's transaction; False if ``wait`` is off and
    another drain has it. Catalog transactions never take it, so waiting cannot deadlock
    with them; the queue rows they lock are still skipped (their own events follow)."""
    if wait:
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (DRAIN_LOCK,))
        return True
    rows = await fetch_rows(conn, "SELECT pg_try_advisory_xact_lock(%s)", (DRAIN_LOCK,))
    return bool(rows[0][0])


async def index_queued(
    conn: AsyncConnection[Any], *, half_life_days: float, limit: int = 2000
) -> tuple[int, list[str]]:
    """Rebuild up to ``limit`` queued documents on ``conn`` (the caller's transaction);
    returns (titles dequeued, titles whose document is gone)."""
    # SKIP LOCKED: a title a catalog transaction is queueing right now, or that the other
    # drain (projector or background step) holds, is left for the next round. So a drain
    # never waits on a queue row, and two transactions never wait on each other (deadlock).
    queued = await fetch_rows(
        conn,
        "SELECT content_id, seq FROM search_queue ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED",
        (limit,),
    )
    if not queued:
        return 0, []
    ids = [r[0] for r in queued]
    now = datetime.now(UTC)
    rows = await fetch_rows(conn, _SOURCE_SQL, {"ids": ids})
    docs = [document(r, now, half_life_days) for r in rows]
    if docs:
        await _upsert(conn, docs)
    present = {d["content_id"] for d in docs}
    gone = [i for i in ids if i not in present]
    if gone:
        await conn.execute("DELETE FROM search_docs WHERE content_id = ANY(%s)", (gone,))
    await conn.execute(
        "DELETE FROM search_queue q USING unnest(%s::text[], %s::bigint[]) AS t(id, s)"
        " WHERE q.content_id = t.id AND q.seq = t.s",
        (ids, [r[1] for r in queued]),
    )
    return len(ids), gone


async def push_payloads(conn: AsyncConnection[Any], vectors: VectorStore, limit: int) -> int:
    """Push changed filter fields of already-embedded documents to a vector store that
    keeps them beside the vector (Qdrant); marked synced only after it took them, so a
    store that is down gets them later."""
    if vectors.name == "pgvector":  # it filters on the documents' own columns
        cur = await conn.execute(
            "UPDATE search_docs SET payload_synced = TRUE WHERE NOT payload_synced"
            " AND embedded_hash IS NOT NULL"
        )
        return cur.rowcount
    rows = await fetch_rows(
        conn,
        "SELECT content_id, kind, genres, people, year, rating, offer_keys, indexed_at"
        " FROM search_docs WHERE NOT payload_synced AND embedded_hash IS NOT NULL LIMIT %s",
        (limit,),
    )
    if not rows:
        return 0
    fields = ("kind", "genres", "people", "year", "rating", "offer_keys")
    await vectors.set_payloads([(r[0], dict(zip(fields, r[1:7], strict=True))) for r in rows])
    await conn.execute(
        "UPDATE search_docs SET payload_synced = TRUE FROM unnest(%s::text[],"
        " %s::timestamptz[]) AS t(id, at) WHERE content_id = t.id AND indexed_at = t.at",
        ([r[0] for r in rows], [r[7] for r in rows]),
    )
    return len(rows)


async def upstream_covers(conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> bool:
    """Have the projectors whose tables the documents are read from applied ``batch``?"""
    last: dict[tuple[str, int], int] = {}
    for e in batch:
        tp = (e.topic, e.partition)
        last[tp] = max(last.get(tp, -1), e.offset)
    rows = await fetch_rows(
        conn,
        "SELECT t.topic, t.part FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[])"
        " AS t(projector, topic, part, off) LEFT JOIN projection_watermarks w"
        " ON w.projector = t.projector AND w.topic = t.topic AND w.partition = t.part"
        " WHERE coalesce(w.next_offset, 0) <= t.off",
        (
            [UPSTREAM[t] for t, _ in last],
            [t for t, _ in last],
            [p for _, p in last],
            list(last.values()),
        ),
    )
    return not rows


class SearchProjector:
    """The ``search`` read model (``search_docs``), in the registry like every other."""

    name = "search"
    topics = (CATALOG.name, RESOLUTION.name, AVAILABILITY.name)
    tables = ("search_docs",)
    side_stores = ("vectors",)
    #: one process holds the embedded vector store; documents are one queue anyway
    shardable = False
    #: what a replay must rebuild identically: quality and popularity move with the clock
    #: and the plays, and the vector bookkeeping with the background step
    checksum_columns = {
        "search_docs": (
            "content_id", "kind", "title", "title_norm", "original_title", "year", "genres",
            "people", "rating", "imdb_id", "tmdb_id", "offer_keys", "platforms", "first_seen",
            "tsv", "embed_text", "text_hash",
        )
    }  # fmt: skip
    upstream_wait_s = 30.0

    def __init__(self) -> None:
        self.half_life_days = 14.0

    def check(self, event: Envelope) -> None:
        return None  # the upstream projectors judge the events; this one only follows

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> list[str]:
        deadline = time.monotonic() + self.upstream_wait_s
        delay = 0.01
        while not await upstream_covers(conn, batch):
            if time.monotonic() >= deadline:
                raise UpstreamBehind("catalog projectors have not applied this batch yet; retrying")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        await hold_drain(conn, wait=True)
        gone: list[str] = []
        while True:
            n, g = await index_queued(conn, half_life_days=self.half_life_days)
            gone += g
            if not n:
                return gone

    async def sync_side_stores(
        self, stores: Stores, conn: AsyncConnection[Any], applied: Any, redelivered: Any
    ) -> None:
        setup: SearchSetup | None = stores.search
        if setup is None or setup.vectors is None:
            return
        try:  # a store that is down catches up from the flags in search_docs
            if applied:  # a point left behind is never returned (hydrate drops it)
                await setup.vectors.delete(applied)
            # the filter fields beside each vector follow the documents at once
            while await push_payloads(conn, setup.vectors, 2000):
                pass
        except Exception as exc:
            log.warning("vector store behind the search documents (%r); catching up later", exc)

    async def reset_side_stores(self, stores: Stores) -> None:
        """A replay starts from nothing: every title is queued again, every vector goes."""
        async with stores.pg.connection() as conn:
            await conn.execute(
                "INSERT INTO search_queue (content_id) SELECT content_id FROM content"
                " ON CONFLICT (content_id) DO UPDATE SET seq = nextval('search_queue_seq')"
            )
        setup: SearchSetup | None = stores.search
        if setup is not None and setup.vectors is not None:
            await setup.vectors.reset()

    async def prepare(self, stores: Stores) -> None:
        setup: SearchSetup | None = stores.search
        if setup is not None:
            self.half_life_days = setup.half_life_days

    def background(self, stores: Stores) -> Any:
        """The step that derives vectors (and keeps popularity and time windows current)."""
        setup: SearchSetup | None = stores.search
        if setup is None or not setup.background or setup.vectors is None:
            return None
        from projections.search_embedding import SearchIndexer

        return SearchIndexer(
            stores.pg,
            setup.vectors,
            embedder=setup.embedder,
            cache_path=setup.cache_path,
            half_life_days=setup.half_life_days,
        )


async def status(pool: AsyncConnectionPool) -> dict[str, int]:
    async with pool.connection() as conn:
        rows = await fetch_rows(
            conn,
            "SELECT (SELECT count(*) FROM search_queue), count(*),"
            " count(*) FILTER (WHERE embedded_hash = text_hash),"
            " count(*) FILTER (WHERE embedded_hash IS NOT NULL AND NOT payload_synced)"
            " FROM search_docs",
        )
    queued, docs, embedded, unsynced = rows[0]
    # a vector whose filter fields are not yet beside it is pending too: filtered vector
    # searches would miss it
    return {
        "queued": queued,
        "documents": docs,
        "embedded": embedded,
        "pending": docs - embedded + unsynced,
    }


# Episodes are reached through their series; only movies and series are documents.
_SOURCE_SQL = """
SELECT c.content_id, c.kind, c.title, c.original_title, c.year, c.genres, c.overview,
       c.imdb_id, c.tmdb_id, c.first_seen, c.updated_at, c.source_count, c.completeness,
       c.agreement,
       (SELECT array_agg(DISTINCT t.title) FROM platform_titles t
         WHERE t.content_id = c.content_id),
       (SELECT array_agg(DISTINCT a.region || '|' || a.platform || '|' || a.offer_type)
          FROM platform_titles t JOIN availability a
            ON a.platform = t.platform AND a.platform_id = t.platform_id
         WHERE t.content_id = c.content_id
           AND (a.available_until IS NULL OR a.available_until > now())
           AND (a.available_from IS NULL OR a.available_from <= now())),
       (SELECT count(*) FROM playback_positions p WHERE p.content_id = c.content_id)::int,
       (SELECT array_agg(DISTINCT x) FROM platform_titles t, unnest(t.people) x
         WHERE t.content_id = c.content_id),
       (SELECT array_agg(DISTINCT x) FROM platform_titles t, unnest(t.keywords) x
         WHERE t.content_id = c.content_id),
       c.rating
  FROM content c
 WHERE c.content_id = ANY(%(ids)s) AND c.kind IN ('movie', 'series')
"""


async def _upsert(conn: Any, docs: list[dict[str, Any]]) -> None:
    cols = [c for c in _DOC_COLS if c not in ("alt_titles", "overview", "keywords")]
    async with conn.cursor() as cur:
        await cur.executemany(
            f"INSERT INTO search_docs ({', '.join(cols)}, tsv, indexed_at) VALUES ("
            + ", ".join(f"%({c})s" for c in cols)
            + ", setweight(to_tsvector('english', %(title)s), 'A')"
            " || setweight(to_tsvector('english', coalesce(%(original_title)s, '') || ' '"
            " || %(alt_titles)s), 'B')"
            " || setweight(to_tsvector('english', %(overview)s || ' ' || %(keywords)s), 'C')"
            " || setweight(to_tsvector('english', array_to_string(%(genres)s::text[], ' ')"
            " || ' ' || array_to_string(%(people)s::text[], ' ')), 'D'), now())"
            " ON CONFLICT (content_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in cols[1:])
            + ", tsv = EXCLUDED.tsv, indexed_at = clock_timestamp(), payload_synced = FALSE",
            docs,
        )
