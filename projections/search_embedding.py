"""The ``search`` projector's background step: vectors, popularity and time windows.

Embedding runs about 100 times slower than building documents (85 titles/s with the
default model on two cores), so it is not part of a batch: it embeds the documents whose
text changed since their vector was made, most popular first, from the embedding cache
when that text was embedded before, writes them to the vector store and records the text
hash each vector came from. It also pushes changed filter fields beside the vectors, folds
plays into popularity, re-queues titles whose offers opened or closed with the clock, and
drains the queue when no event comes to do it. One runs at a time (an advisory lock).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from psycopg_pool import AsyncConnectionPool

from core.backoff import Backoff, Retry, pause
from projections.base import fetch_rows
from projections.search_documents import hold_drain, index_queued, payload, push_payloads
from projections.search_vectors import VectorDoc, VectorStore

log = logging.getLogger("mgw.search.indexer")
_LOCK = 0x6D677773  # "mgws"


class SearchIndexer:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        vectors: VectorStore,
        *,
        embedder: Callable[[], Any] | None,
        cache_path: Path | None,
        half_life_days: float = 14.0,
        doc_batch: int = 2000,
        vector_batch: int = 64,
    ) -> None:
        self.pool = pool
        self.vectors = vectors
        self._embedder_factory = embedder
        self._embedder: Any = None
        self._cache: Any = None
        self.cache_path = cache_path
        self.half_life_days = half_life_days
        self.doc_batch = doc_batch
        self.vector_batch = vector_batch
        self.embedded_total = 0
        self.encoded_total = 0
        self.embed_seconds = 0.0
        self._prepared = False

    # -- phase 1: documents ----------------------------------------------------------
    async def index_documents(self) -> int:
        """Rebuild one batch of queued documents outside any event (after a catalog replay,
        or when offers crossed a time window); returns how many titles were dequeued."""
        # read and write in one transaction: a catalog rebuild (TRUNCATE content) waits
        # for it, so a document read before the rebuild cannot be written after it
        async with self.pool.connection() as conn, conn.transaction():
            if not await hold_drain(conn, wait=False):
                return 0  # the projector is draining; it takes these titles too
            n, gone = await index_queued(
                conn, half_life_days=self.half_life_days, limit=self.doc_batch
            )
        if gone:
            try:  # best effort: a point left behind is never returned (hydrate drops it)
                await self.vectors.delete(gone)
            except Exception as exc:
                log.warning("could not delete %d vectors (%r)", len(gone), exc)
        return n

    # -- phase 2: vectors --------------------------------------------------------------
    def _embedder_instance(self) -> Any:
        if self._embedder is None and self._embedder_factory is not None:
            self._embedder = self._embedder_factory()
            if self.cache_path is not None:
                from core.embedding import EmbeddingCache

                self.cache_path.parent.mkdir(parents=True, exist_ok=True)
                self._cache = EmbeddingCache(
                    self.cache_path, self._embedder.model_id, self._embedder.dims
                )
        return self._embedder

    async def sync_payloads(self) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            await hold_drain(conn, wait=True)  # the projector pushes the same rows
            return await push_payloads(conn, self.vectors, self.doc_batch)

    async def index_vectors(self) -> int:
        """Embed one batch of documents whose vector is missing or stale."""
        if self._embedder_factory is None:
            return 0
        async with self.pool.connection() as conn:
            rows = await fetch_rows(
                conn,
                "SELECT content_id, text_hash, embed_text, kind, genres, people, year, rating,"
                " offer_keys FROM search_docs WHERE embedded_hash IS DISTINCT FROM text_hash"
                " ORDER BY popularity DESC, content_id LIMIT %s",
                (self.vector_batch,),
            )
            if not rows:
                return 0
            from core.embedding import embed_cached

            embedder = await asyncio.to_thread(self._embedder_instance)
            started = time.perf_counter()
            vecs, encoded = await asyncio.to_thread(
                embed_cached, embedder, self._cache, [r[2] for r in rows]
            )
            self.embed_seconds += time.perf_counter() - started
            self.encoded_total += encoded
            docs = [
                VectorDoc(
                    r[0],
                    r[1],
                    vecs[i],
                    payload(
                        {
                            "kind": r[3],
                            "genres": r[4],
                            "people": r[5],
                            "year": r[6],
                            "rating": r[7],
                            "offer_keys": r[8],
                        }
                    ),
                )  # fmt: skip
                for i, r in enumerate(rows)
            ]
            await self.vectors.upsert(docs)
            # recorded after the store has it, and only for the text it was computed from:
            # a crash in between only embeds it again (from the cache)
            await hold_drain(conn, wait=True)
            await conn.execute(
                "UPDATE search_docs SET embedded_hash = t.h, payload_synced = TRUE"
                " FROM unnest(%s::text[], %s::text[]) AS t(id, h)"
                " WHERE content_id = t.id AND text_hash = t.h",
                ([d.content_id for d in docs], [d.text_hash for d in docs]),
            )
            self.embedded_total += len(docs)
            return len(docs)

    # -- running -----------------------------------------------------------------------
    async def refresh_popularity(self) -> None:
        """Plays change without touching the catalog: fold them in now and then."""
        async with self.pool.connection() as conn, conn.transaction():
            await hold_drain(conn, wait=True)
            await conn.execute(
                "UPDATE search_docs s SET popularity = p.pop FROM (SELECT content_id,"
                " least(1.0, ln(1 + count(*)) / ln(1 + 1000))::real AS pop"
                " FROM playback_positions GROUP BY content_id) p"
                " WHERE s.content_id = p.content_id AND s.popularity IS DISTINCT FROM p.pop"
            )

    async def catch_up(self, *, vectors: bool = True, stop: asyncio.Event | None = None) -> None:
        """Index until the queue is empty (and, with ``vectors``, every vector is made)."""
        while await self.index_documents():
            pass
        while await self.sync_payloads():
            pass
        while vectors and (stop is None or not stop.is_set()):
            if not (await self.sync_payloads() or await self.index_vectors()):
                break
            while await self.index_documents():
                pass

    async def _step(self) -> int:
        """One unit of work: documents first, then payloads and vectors. While the vector
        store is unreachable, full text keeps being indexed."""
        if not self._prepared:
            try:
                await self.vectors.prepare()
                self._prepared = True
            except Exception as exc:
                log.warning("vector store not ready (%r); full text only for now", exc)
                return await self.index_documents()
        did = await self.index_documents()
        if did:
            return did
        try:
            return await self.sync_payloads() or await self.index_vectors()
        except Exception:
            self._prepared = False  # probe the store again before the next vector work
            raise

    async def requeue_offer_changes(self) -> int:
        """Offers start and end with time, not with events: queue the titles whose offers
        crossed a start or an end since the last sweep (kept in search_sweep)."""
        async with self.pool.connection() as conn, conn.transaction():
            rows = await fetch_rows(
                conn, "SELECT last_sweep FROM search_sweep WHERE id = 1 FOR UPDATE"
            )
            last = rows[0][0] if rows else None
            cur = await conn.execute(
                "INSERT INTO search_queue (content_id) SELECT DISTINCT t.content_id"
                " FROM availability a JOIN platform_titles t"
                " ON t.platform = a.platform AND t.platform_id = a.platform_id"
                " WHERE (a.available_until > %(last)s AND a.available_until <= now())"
                " OR (a.available_from > %(last)s AND a.available_from <= now())"
                " ON CONFLICT (content_id) DO UPDATE SET seq = nextval('search_queue_seq')",
                {"last": last or datetime(1970, 1, 1, tzinfo=UTC)},
            )
            await conn.execute(
                "INSERT INTO search_sweep (id, last_sweep) VALUES (1, now())"
                " ON CONFLICT (id) DO UPDATE SET last_sweep = EXCLUDED.last_sweep"
            )
            return cur.rowcount

    async def run(self, stop: asyncio.Event, *, idle_s: float = 0.5) -> None:
        """The indexer loop; returns when ``stop`` is set. Only one process indexes."""
        async with self.pool.connection() as lock_conn:
            while not stop.is_set():
                got = await fetch_rows(lock_conn, "SELECT pg_try_advisory_lock(%s)", (_LOCK,))
                if got[0][0]:
                    break
                await pause(5.0, stop)
            if stop.is_set():
                return
            last_pop = 0.0
            # keep indexing whatever fails: the queue and the hashes keep what is left to do
            retry = Retry("search indexer", log, backoff=Backoff(0.5, 30.0), give_up_after=None)
            try:
                while not stop.is_set():
                    try:
                        did = await self._step()
                        if time.monotonic() - last_pop > 60:
                            await self.refresh_popularity()
                            await self.requeue_offer_changes()
                            last_pop = time.monotonic()
                        retry.succeeded()
                    except Exception as exc:
                        await pause(retry.failed(exc) or 30.0, stop)
                        continue
                    if did <= 0:
                        try:  # caught up: build the graph over what was written meanwhile
                            await self.vectors.optimize()
                        except Exception as exc:
                            log.warning("vector index build failed (%r); retrying later", exc)
                        await pause(idle_s, stop)
            finally:
                await lock_conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK,))
                if self._cache is not None:
                    self._cache.close()
