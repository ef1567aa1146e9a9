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
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.topics import AVAILABILITY, CATALOG, RESOLUTION
from projections.base import Envelope, Stores, fetch_rows
from projections.search_documents import hold_drain, index_queued, push_payloads
from projections.search_vectors import VectorStore

log = logging.getLogger("mgw.search.indexer")

#: which projector's tables a topic's events land in: the documents are read from them
UPSTREAM = {CATALOG.name: "catalog", RESOLUTION.name: "catalog", AVAILABILITY.name: "availability"}


class UpstreamBehind(TimeoutError):
    """The catalog's projectors have not applied this batch yet. A timeout, so the pipeline
    treats it as transient: the batch is retried, never dead-lettered."""


@dataclass
class SearchSetup:
    """What the search read model needs besides connections (composed in mgw/)."""

    vectors: VectorStore | None = None
    embedder: Callable[[], Any] | None = None
    cache_path: Path | None = None
    half_life_days: float = 14.0
    #: run the background step (vectors, popularity, time sweeps) where the projector runs
    background: bool = True


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
    #: read undecoded: the documents are built from the catalog's tables, and a batch is
    #: only positions to wait for (upstream_covers). Decoding every offer and observation
    #: again was 29 % of this worker's CPU during an ingest (docs/catalog.md); a record
    #: that does not decode is the upstream projectors' dead letter, not a second one here.
    raw_topics = frozenset(topics)
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
