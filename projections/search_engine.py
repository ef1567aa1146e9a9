"""Hybrid search: three retrievers under one set of filters, fused and re-ranked.

For a query the engine runs, concurrently and each on its own connection, PostgreSQL full
text (weighted tsvector, OR of the words), pg_trgm title similarity (typos, partial
titles) and the vector search over sentence embeddings; fuses their rankings by weighted
reciprocal rank fusion and re-ranks with quality, popularity, availability, freshness and
exact-title features. Filters go into every retriever's own query. The vector retriever
failing (store down, model missing) leaves full text and trigram: the answer is flagged
``degraded`` and counted in ``mgw_search_degraded_total``.

Autocomplete, the speller and the intent parser's vocabularies live in memory and are
rebuilt in a thread when the search documents change (checked at most every few seconds).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool

from core import tracing
from domain.catalog import PLATFORMS
from domain.discovery.autocomplete import Autocomplete, entries_from_rows
from domain.discovery.documents import ANY, fold
from domain.discovery.facets import FacetDoc, facet_counts
from domain.discovery.filters import SearchFilters
from domain.discovery.fusion import Candidate, freshness, rerank, rrf, title_match
from domain.discovery.intent import IntentParser
from domain.discovery.query_class import (
    DESCRIPTION,
    class_weights,
    classify,
    content_words,
    salient_terms,
    windows,
)
from domain.discovery.spelling import Speller
from projections import search as q
from projections.search_vectors import VectorStore

log = logging.getLogger("mgw.search")
DEGRADED = Counter(
    "mgw_search_degraded_total", "Searches answered without the vector retriever", ["reason"]
)
#: candidates each retriever contributes; also the deepest page a search reaches
DEPTH = 100
#: titles the trigram retriever contributes: it finds the few titles a query names
TRIGRAM_DEPTH = 30
#: queries longer than this (in words) are not a title typed with a typo: no trigram
TRIGRAM_MAX_WORDS = 4
#: candidates from the vector retriever (the HNSW walk widens to this many)
VECTOR_DEPTH = 60
#: words past which a query is longer than the embedding model reads (128 tokens)
LONG_QUERY_WORDS = 90


@dataclass
class Vocabulary:
    autocomplete: Autocomplete
    speller: Speller
    intent: IntentParser
    genres: list[str]
    version: tuple[Any, ...] = ()
    #: documents per lexeme, and documents: the IDF of a description's words
    doc_freq: dict[str, int] = field(default_factory=dict)
    docs: int = 0


@dataclass
class Ranked:
    items: list[tuple[Candidate, q.Hit]]
    facets: dict[str, list[dict[str, object]]]
    degraded: bool = False
    retrievers: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    query_class: str = "title"
    #: the weights this query was fused and re-ranked with (its class's)
    weights: dict[str, float] = field(default_factory=dict)


class SearchEngine:
    def __init__(
        self,
        pool: AsyncConnectionPool,
        vectors: VectorStore | None,
        embedder: Callable[[], Any] | None,
        *,
        half_life_days: float = 14.0,
        refresh_s: float = 3.0,
    ) -> None:
        self.pool = pool
        self.vectors = vectors
        self._embedder_factory = embedder
        self._embedder: Any = None
        self.half_life_days = half_life_days
        self.refresh_s = refresh_s
        self.vocab: Vocabulary | None = None
        self._checked = 0.0
        self._building: asyncio.Task[None] | None = None
        self._qcache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._qlock = threading.Lock()
        self._first_build = asyncio.Lock()

    @property
    def vectors_enabled(self) -> bool:
        return self._embedder_factory is not None

    # -- vocabularies ----------------------------------------------------------------
    async def vocabulary(self) -> Vocabulary:
        """The in-memory indexes, rebuilt in the background when documents change; the
        first call waits for them."""
        now = time.monotonic()
        if self.vocab is None:
            async with self._first_build:  # concurrent first requests build it once
                if self.vocab is None:
                    await self._rebuild()
        elif now - self._checked > self.refresh_s and (
            self._building is None or self._building.done()
        ):
            self._checked = now
            self._building = asyncio.create_task(self._rebuild_if_changed())
        assert self.vocab is not None
        return self.vocab

    async def _rebuild_if_changed(self) -> None:
        async with self.pool.connection() as conn:
            version = await q.docs_version(conn)
        if self.vocab is None or version != self.vocab.version:
            await self._rebuild()

    async def _rebuild(self) -> None:
        async with self.pool.connection() as conn:
            version = await q.docs_version(conn)
            rows = await q.title_rows(conn)
            genres = await q.genre_vocabulary(conn)
            doc_freq, docs = await q.lexeme_stats(conn)
        vocab = await asyncio.to_thread(_build, rows, genres, version)
        vocab.doc_freq, vocab.docs = doc_freq, docs
        self.vocab = vocab
        self._checked = time.monotonic()

    # -- vectors ---------------------------------------------------------------------
    def _query_vector(self, text: str) -> np.ndarray:
        """Runs in worker threads: the LRU is guarded, the model call is not held under it."""
        with self._qlock:
            v = self._qcache.get(text)
            if v is not None:
                self._qcache.move_to_end(text)
                return v
            if self._embedder is None:
                assert self._embedder_factory is not None
                self._embedder = self._embedder_factory()
            embedder = self._embedder
        # A description longer than the model reads (128 tokens, about 90 words) loses its
        # tail in one pass: the whole text's pass (its head) is added to the mean of its
        # windows' passes, all in one batch. Shorter texts take one pass: pooling windows
        # of a text the model reads whole scored worse (docs/search.md).
        passes = windows(text) if len(text.split()) > LONG_QUERY_WORDS else []
        if len(passes) > 1:
            many = np.asarray(embedder.encode([text, *passes]), dtype=np.float32)
            pooled = many[0] + many[1:].mean(axis=0)
            vec: np.ndarray = pooled / (float(np.linalg.norm(pooled)) or 1.0)
        else:
            vec = embedder.encode([text])[0]
        with self._qlock:
            self._qcache[text] = vec
            if len(self._qcache) > 2048:
                self._qcache.popitem(last=False)
        return vec

    async def vector_ids(self, text: str, where: SearchFilters, limit: int) -> list[str]:
        if self._embedder_factory is None or self.vectors is None:
            raise RuntimeError("no embedding model or vector store in this process")
        with tracing.span("embed query", **{"mgw.embeddings": "query"}):
            vec = await asyncio.to_thread(self._query_vector, text)
        with tracing.span(
            "vector search", **{"db.system.name": self.vectors.name, "mgw.limit": limit}
        ):
            return await self.vectors.search(vec, where, limit)

    async def fulltext_ids(
        self, words: Sequence[str], where: SearchFilters, limit: int
    ) -> list[str]:
        async with self.pool.connection() as conn:
            return await q.fulltext_ids(conn, words, where, limit)

    async def salient_ids(self, text: str, where: SearchFilters, limit: int) -> list[str]:
        """Full text for a description: its rarest words only, weighed by IDF."""
        vocab = await self.vocabulary()
        async with self.pool.connection() as conn:
            lexemes = await q.lexemes(conn, content_words(text))
            terms = salient_terms(lexemes, vocab.doc_freq, vocab.docs)
            return await q.salient_ids(conn, terms, where, limit)

    async def salient_terms(self, text: str) -> list[tuple[str, float]]:
        vocab = await self.vocabulary()
        async with self.pool.connection() as conn:
            lexemes = await q.lexemes(conn, content_words(text))
        return salient_terms(lexemes, vocab.doc_freq, vocab.docs)

    async def trigram_ids(self, text: str, where: SearchFilters, limit: int) -> list[str]:
        return [cid for cid, _ in await self.trigram_scored(text, where, limit)]

    async def trigram_scored(
        self, text: str, where: SearchFilters, limit: int
    ) -> list[tuple[str, float]]:
        async with self.pool.connection() as conn:
            return await q.trigram_ids(conn, fold(text), where, limit)

    # -- the hybrid query ------------------------------------------------------------
    async def retrieve(
        self,
        text: str,
        where: SearchFilters,
        weights: Mapping[str, float],
        *,
        also: str | None = None,
        depth: int = DEPTH,
        use: Sequence[str] = ("fulltext", "trigram", "vector"),
        query_class: str | None = None,
    ) -> Ranked:
        """Fused, re-ranked candidates for ``text``; ``also`` (a spelling correction)
        widens full text and trigram matching. ``weights`` are the profile's: the ones of
        the query's class (domain/discovery/query_class.py) are picked here."""
        query_class = query_class or classify(text)
        weights = class_weights(weights, query_class)
        words = text.split() + (also.split() if also else [])
        jobs: dict[str, Any] = {}
        if "fulltext" in use and weights.get("fulltext", 1.0) > 0:
            if query_class == DESCRIPTION:
                jobs["fulltext"] = self.salient_ids(text, where, depth)
            else:
                jobs["fulltext"] = self.fulltext_ids(words, where, depth)
        long_query = len((also or text).split()) > TRIGRAM_MAX_WORDS
        if "trigram" in use and weights.get("trigram", 1.0) > 0 and not long_query:
            jobs["trigram"] = self.trigram_scored(also or text, where, min(depth, TRIGRAM_DEPTH))
        if "vector" in use and weights.get("vector", 1.0) > 0 and fold(text):
            jobs["vector"] = self.vector_ids(text, where, min(depth, VECTOR_DEPTH))
        timings: dict[str, float] = {}

        async def timed(name: str, job: Any) -> Any:
            t = time.perf_counter()
            try:
                return await job
            finally:
                timings[name] = round((time.perf_counter() - t) * 1000, 2)

        started = time.perf_counter()
        results = await asyncio.gather(
            *(timed(n, j) for n, j in jobs.items()), return_exceptions=True
        )
        timings["retrieval"] = round((time.perf_counter() - started) * 1000, 2)
        rankings: dict[str, list[str]] = {}
        scales: dict[str, dict[str, float]] = {}
        degraded = False
        for name, res in zip(jobs, results, strict=True):
            if isinstance(res, BaseException):
                if name != "vector":
                    raise res
                degraded = True
                DEGRADED.labels(type(res).__name__).inc()
                log.warning("vector retrieval failed, answering without it: %r", res)
                continue
            if name == "trigram":
                rankings[name] = [cid for cid, _ in res]
                scales[name] = {cid: sim * sim for cid, sim in res}
            else:
                rankings[name] = res
        fused = rrf(rankings, weights, scales)
        t = time.perf_counter()
        async with self.pool.connection() as conn:
            hits = await q.hydrate(conn, list(fused))
        timings["hydrate"] = round((time.perf_counter() - t) * 1000, 2)
        t = time.perf_counter()
        cands = [c for cid, c in fused.items() if cid in hits]
        now = datetime.now(UTC)
        targets = {title_key(text), title_key(also or "")} - {""}
        for c in cands:
            h = hits[c.content_id]
            c.features = features(h, where.region, targets, now, self.half_life_days)
        ranked = rerank(cands, weights)
        timings["rerank"] = round((time.perf_counter() - t) * 1000, 2)
        t = time.perf_counter()
        facets = facet_counts((_facet_doc(hits[c.content_id]) for c in ranked), where.region)
        timings["facets"] = round((time.perf_counter() - t) * 1000, 2)
        return Ranked(
            [(c, hits[c.content_id]) for c in ranked],
            facets,
            degraded,
            {k: len(v) for k, v in rankings.items()},
            timings,
            query_class,
            weights,
        )

    async def browse(
        self, where: SearchFilters, limit: int, after: tuple[float, float, str] | None
    ) -> tuple[list[q.Hit], dict[str, list[dict[str, object]]]]:
        async with self.pool.connection() as conn:
            page = await q.browse(conn, where, limit, after)
            # every page counts facets over the same base: the first 500 of the list
            facet_base = await q.browse(conn, where, 500, None)
        return page, facet_counts((_facet_doc(h) for h in facet_base), where.region)


def features(
    h: q.Hit, region: str | None, targets: set[str], now: datetime, half_life: float
) -> dict[str, float]:
    key = f"{region}|{ANY}|{ANY}" if region else None
    watchable = (key in h.offer_keys) if key else bool(h.offer_keys)
    return {
        "title_match": max((title_match(t, title_key(h.title_norm)) for t in targets), default=0.0),
        "quality": float(h.quality),
        "popularity": float(h.popularity),
        "availability": 1.0 if watchable else 0.0,
        "freshness": freshness(h.first_seen, now, half_life),
    }


_ARTICLES = ("the ", "a ", "an ")


def title_key(text: str) -> str:
    """A title as compared for an exact match: folded, without a leading article."""
    t = fold(text)
    for a in _ARTICLES:
        if t.startswith(a):
            return t[len(a) :]
    return t


def _facet_doc(h: q.Hit) -> FacetDoc:
    return FacetDoc(h.genres, h.year, h.offer_keys)


def availability_summary(h: q.Hit, region: str | None) -> dict[str, Any]:
    """Which platforms offer the title, and how, in ``region`` (anywhere without one)."""
    r = region or ANY
    by_platform: dict[str, list[str]] = {}
    for key in h.offer_keys:
        kr, kp, kt = key.split("|")
        if kr == r and kp != ANY and kt != ANY:
            by_platform.setdefault(kp, []).append(kt)
    return {
        "region": region,
        "platforms": [
            {"platform": p, "offer_types": sorted(t)} for p, t in sorted(by_platform.items())
        ],
    }


def _build(rows: list[tuple[Any, ...]], genres: list[str], version: tuple[Any, ...]) -> Vocabulary:
    people = sorted({p for r in rows for p in (r[7] or ())})
    speller = Speller.from_texts((str(r[1]) for r in rows), extra=genres)
    return Vocabulary(
        Autocomplete(
            entries_from_rows(rows),
            [("genre", g) for g in genres] + [("person", p) for p in people],
        ),
        speller,
        IntentParser(genres, PLATFORMS, people),
        genres,
        version,
    )
