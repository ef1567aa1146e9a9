"""Where title vectors live and how they are searched: one port, three backends.

- **Qdrant Edge** (``qdrant-edge-py``, the default on one machine): Qdrant's own engine
  in-process, a shard directory under the data dir. HNSW with payload indexes on the filter
  fields, so a filtered search walks the graph with the filter applied, as a Qdrant server
  does. Its native code picks SIMD at run time (tests/test_portability.py runs it on an
  emulated CPU without AVX-512). One process opens a shard: the process that runs the
  ``search`` projector's background step also answers the searches.
- **Qdrant server** (``QDRANT_URL``): the ``content`` collection, for fleets where API
  processes and workers are many.
- **pgvector** (``MGW_VECTOR_STORE=pgvector``, opt-in): a ``search_vectors`` table in a
  PostgreSQL server that has the extension; the vector search joins ``search_docs`` and
  filters with the same ``WHERE`` clause as full text. Never the embedded default: the
  pgvector build in the embedded PostgreSQL wheel was compiled for AVX-512 and kills the
  server on CPUs without it.

Why Edge is the default, with the figures, is in docs/search.md. Every backend runs the
same contract suite (tests/test_vector_store.py).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from psycopg_pool import AsyncConnectionPool

from domain.discovery.documents import filter_keys
from domain.discovery.filters import SearchFilters, allowed_ratings, unrated_admitted

COLLECTION = "content"
DIMS = 384
#: filter fields kept beside each vector, and how each is indexed
KEYWORD_FIELDS = ("kind", "genres", "people", "offer_keys", "rating")
INTEGER_FIELDS = ("year",)


@dataclass(frozen=True, slots=True)
class VectorDoc:
    content_id: str
    text_hash: str
    vector: np.ndarray
    payload: dict[str, Any]


class VectorStore(Protocol):
    name: str

    async def prepare(self) -> None: ...
    async def upsert(self, docs: Sequence[VectorDoc]) -> None: ...
    async def set_payloads(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> None: ...
    async def delete(self, content_ids: Sequence[str]) -> None: ...
    async def reset(self) -> None: ...
    async def count(self) -> int: ...
    async def search(self, vector: np.ndarray, where: SearchFilters, limit: int) -> list[str]: ...
    async def optimize(self) -> bool: ...
    async def close(self) -> None: ...


# -- filters, once, for every backend -----------------------------------------------------
#: ("any", key, values) | ("value", key, value) | ("range", key, gte, lte) | ("empty", key)
Condition = tuple[Any, ...]


def vector_conditions(f: SearchFilters) -> tuple[list[Condition], list[Condition]]:
    """The filters as payload conditions: (all must hold, at least one of these must)."""
    must: list[Condition] = []
    if f.kinds:
        must.append(("any", "kind", list(f.kinds)))
    must += [("value", "genres", g) for g in f.genres]
    must += [("value", "people", p) for p in f.people]
    if f.year_from is not None or f.year_to is not None:
        must.append(("range", "year", f.year_from, f.year_to))
    keys = filter_keys(f.region, f.platforms, f.offer_types)
    if keys is not None:
        must.append(("any", "offer_keys", keys))
    should: list[Condition] = []
    if f.max_rating:
        should.append(("any", "rating", allowed_ratings(f.max_rating)))
        if unrated_admitted(f.max_rating, f.unrated_as):
            should.append(("empty", "rating"))  # missing, null or []: an unrated title
    return must, should


def filter_clause(f: SearchFilters, params: dict[str, Any]) -> str:
    """SQL conditions on ``search_docs`` for the filters; fills ``params``."""
    conds = ["TRUE"]
    if f.kinds:
        conds.append("kind = ANY(%(f_kinds)s)")
        params["f_kinds"] = list(f.kinds)
    if f.genres:
        conds.append("genres @> %(f_genres)s")
        params["f_genres"] = list(f.genres)
    if f.people:
        conds.append("people @> %(f_people)s")
        params["f_people"] = list(f.people)
    if f.year_from is not None:
        conds.append("year >= %(f_year_from)s")
        params["f_year_from"] = f.year_from
    if f.year_to is not None:
        conds.append("year <= %(f_year_to)s")
        params["f_year_to"] = f.year_to
    keys = filter_keys(f.region, f.platforms, f.offer_types)
    if keys is not None:
        conds.append("offer_keys && %(f_offers)s")
        params["f_offers"] = keys
    if f.max_rating:
        # the one ladder of domain/identity/ratings.py; a title without a rating follows
        # the unrated policy (MGW_UNRATED_AS): by default it counts as the strictest
        params["f_ratings"] = allowed_ratings(f.max_rating)
        if unrated_admitted(f.max_rating, f.unrated_as):
            conds.append("(rating IS NULL OR rating = ANY(%(f_ratings)s))")
        else:
            conds.append("rating = ANY(%(f_ratings)s)")
    return " AND ".join(conds)


_POINT_NS = uuid.UUID("0f4c5a1e-3b8d-4f6a-9c2e-7d1b5e3a9f40")


def point_id(content_id: str) -> str:
    """Qdrant wants UUIDs or integers; content ids are neither, so derive one."""
    return str(uuid.uuid5(_POINT_NS, content_id))


def _floats(v: np.ndarray) -> list[float]:
    return np.asarray(v, dtype=np.float32).tolist()  # type: ignore[no-any-return]


# -- Qdrant Edge, in-process -------------------------------------------------------------
class EdgeVectorStore:
    """A Qdrant Edge shard in a directory. Calls run in a worker thread (the engine
    releases the GIL), so an HNSW build never stalls the event loop."""

    name = "edge"

    def __init__(self, path: Path, *, indexing_threshold_kb: int | None = None) -> None:
        self.path = path
        self.indexing_threshold_kb = indexing_threshold_kb
        self._shard: Any = None
        self._open_lock = threading.Lock()
        self._dirty = 0

    def _config(self) -> Any:
        import qdrant_edge as qe

        return qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=DIMS, distance=qe.Distance.Cosine),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=100, full_scan_threshold=1000),
            optimizers=qe.EdgeOptimizersConfig(
                default_segment_number=1, indexing_threshold=self.indexing_threshold_kb
            ),
            # one core serves searches, the other keeps the API and the projectors going
            max_search_threads=1,
        )

    def _open(self) -> Any:
        with self._open_lock:
            if self._shard is None:
                import qdrant_edge as qe

                self.path.mkdir(parents=True, exist_ok=True)
                if any(self.path.iterdir()):
                    shard = qe.EdgeShard.load(str(self.path))
                else:
                    shard = qe.EdgeShard.create(str(self.path), self._config())
                for field in KEYWORD_FIELDS:
                    shard.update(
                        qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Keyword)
                    )
                for field in INTEGER_FIELDS:
                    shard.update(
                        qe.UpdateOperation.create_field_index(field, qe.PayloadSchemaType.Integer)
                    )
                info = shard.info()
                if info.points_count > info.indexed_vectors_count:
                    self._dirty = 1  # written before a restart: the next optimize looks
                self._shard = shard
            return self._shard

    async def prepare(self) -> None:
        await asyncio.to_thread(self._open)

    async def upsert(self, docs: Sequence[VectorDoc]) -> None:
        if not docs:
            return
        import qdrant_edge as qe

        points = [
            qe.Point(
                point_id(d.content_id), _floats(d.vector), {**d.payload, "content_id": d.content_id}
            )
            for d in docs
        ]

        def run() -> None:
            shard = self._open()
            shard.update(qe.UpdateOperation.upsert_points(points))
            shard.flush()

        await asyncio.to_thread(run)
        self._dirty += len(docs)

    async def set_payloads(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        if not docs:
            return
        import qdrant_edge as qe

        def run() -> None:
            shard = self._open()
            for cid, payload in docs:
                try:
                    shard.update(
                        qe.UpdateOperation.set_payload(
                            [point_id(cid)], {**payload, "content_id": cid}
                        )
                    )
                except Exception as exc:
                    # a payload never creates a point: its vector brings it later
                    if "No point" not in str(exc):
                        raise
            shard.flush()

        await asyncio.to_thread(run)

    async def delete(self, content_ids: Sequence[str]) -> None:
        if not content_ids:
            return
        import qdrant_edge as qe

        def run() -> None:
            shard = self._open()
            shard.update(qe.UpdateOperation.delete_points([point_id(c) for c in content_ids]))
            shard.flush()

        await asyncio.to_thread(run)

    async def reset(self) -> None:
        import shutil

        def run() -> None:
            with self._open_lock:
                if self._shard is not None:
                    self._shard.close()
                    self._shard = None
                shutil.rmtree(self.path, ignore_errors=True)
            self._open()

        await asyncio.to_thread(run)
        self._dirty = 0

    async def count(self) -> int:
        import qdrant_edge as qe

        return int(await asyncio.to_thread(lambda: self._open().count(qe.CountRequest())))

    async def optimize(self) -> bool:
        """Build the HNSW graph over what was written since the last build."""
        if not self._dirty:
            return False
        self._dirty = 0
        return bool(await asyncio.to_thread(lambda: self._open().optimize()))

    def _filter(self, where: SearchFilters) -> Any:
        import qdrant_edge as qe

        def cond(c: Condition) -> Any:
            kind, key = c[0], c[1]
            if kind == "any":
                return qe.FieldCondition(key, match=qe.MatchAny(c[2]))
            if kind == "value":
                return qe.FieldCondition(key, match=qe.MatchValue(c[2]))
            if kind == "range":
                return qe.FieldCondition(key, range=qe.RangeFloat(gte=c[2], lte=c[3]))
            return qe.IsEmptyCondition(key)

        must, should = vector_conditions(where)
        if not must and not should:
            return None
        parts = [cond(c) for c in must]
        if should:
            parts.append(qe.Filter(should=[cond(c) for c in should]))
        return qe.Filter(must=parts)

    async def search(self, vector: np.ndarray, where: SearchFilters, limit: int) -> list[str]:
        import qdrant_edge as qe

        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(_floats(vector)),
            filter=self._filter(where),
            with_payload=["content_id"],
            # ef 64: 128 was tried for filtered recall@10 at 100,000 points and moved it from
            # 0.962 to 0.964 only (docs/search.md), at more cost per search
            params=qe.SearchParams(hnsw_ef=max(64, limit)),
        )
        shard = self._shard or await asyncio.to_thread(self._open)
        # a search is well under a millisecond: a thread hop would cost more than it saves
        points = shard.query(request)
        return [str((p.payload or {}).get("content_id")) for p in points]

    async def close(self) -> None:
        def run() -> None:
            with self._open_lock:
                if self._shard is not None:
                    self._shard.flush()
                    self._shard.close()
                    self._shard = None

        await asyncio.to_thread(run)


# -- Qdrant server (or qdrant-client local mode in a narrow test) --------------------------
class QdrantVectorStore:
    """Vectors in a Qdrant collection, filter fields in the payload."""

    name = "qdrant"

    def __init__(self, client: Any) -> None:
        self.client = client

    async def prepare(self) -> None:
        from qdrant_client import models

        if not await self.client.collection_exists(COLLECTION):
            await self.client.create_collection(
                COLLECTION,
                vectors_config=models.VectorParams(size=DIMS, distance=models.Distance.COSINE),
            )
            fields = {k: models.PayloadSchemaType.KEYWORD for k in KEYWORD_FIELDS}
            fields.update({k: models.PayloadSchemaType.INTEGER for k in INTEGER_FIELDS})
            with warnings.catch_warnings():
                # local mode (tests) has no payload indexes and says so; a server uses them
                warnings.simplefilter("ignore", UserWarning)
                for name, kind in fields.items():
                    await self.client.create_payload_index(COLLECTION, name, kind)

    async def upsert(self, docs: Sequence[VectorDoc]) -> None:
        from qdrant_client import models

        if not docs:
            return
        await self.client.upsert(
            COLLECTION,
            points=[
                models.PointStruct(
                    id=point_id(d.content_id),
                    vector=_floats(d.vector),
                    payload={**d.payload, "content_id": d.content_id},
                )
                for d in docs
            ],
            wait=True,
        )

    async def set_payloads(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        from qdrant_client import models

        if not docs:
            return
        # a payload never creates a point (its vector brings it later), and Qdrant refuses
        # a payload for a point it does not have: send only those it has
        have = {
            str(p.id)
            for p in await self.client.retrieve(
                COLLECTION, [point_id(cid) for cid, _ in docs], with_payload=False
            )
        }
        ops = [
            models.SetPayloadOperation(
                set_payload=models.SetPayload(
                    payload={**payload, "content_id": cid}, points=[point_id(cid)]
                )
            )
            for cid, payload in docs
            if point_id(cid) in have
        ]
        if ops:
            await self.client.batch_update_points(COLLECTION, update_operations=ops, wait=True)

    async def delete(self, content_ids: Sequence[str]) -> None:
        from qdrant_client import models

        if content_ids:
            await self.client.delete(
                COLLECTION,
                points_selector=models.PointIdsList(points=[point_id(c) for c in content_ids]),
                wait=True,
            )

    async def reset(self) -> None:
        if await self.client.collection_exists(COLLECTION):
            await self.client.delete_collection(COLLECTION)
        await self.prepare()

    async def count(self) -> int:
        return int((await self.client.count(COLLECTION, exact=True)).count)

    async def optimize(self) -> bool:
        return False  # a server indexes by itself

    def _filter(self, where: SearchFilters) -> Any:
        from qdrant_client import models

        def cond(c: Condition) -> Any:
            kind, key = c[0], c[1]
            if kind == "any":
                return models.FieldCondition(key=key, match=models.MatchAny(any=c[2]))
            if kind == "value":
                return models.FieldCondition(key=key, match=models.MatchValue(value=c[2]))
            if kind == "range":
                return models.FieldCondition(key=key, range=models.Range(gte=c[2], lte=c[3]))
            return models.IsEmptyCondition(is_empty=models.PayloadField(key=key))

        must, should = vector_conditions(where)
        parts = [cond(c) for c in must]
        if should:
            parts.append(models.Filter(should=[cond(c) for c in should]))
        return models.Filter(must=parts)

    async def search(self, vector: np.ndarray, where: SearchFilters, limit: int) -> list[str]:
        res = await self.client.query_points(
            COLLECTION, query=_floats(vector), query_filter=self._filter(where), limit=limit
        )
        return [str((p.payload or {}).get("content_id")) for p in res.points]

    async def close(self) -> None:
        return None  # the client belongs to whoever opened it


# -- pgvector, opt-in on a server that has it ----------------------------------------------
def vector_literal(v: Sequence[float] | np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.6f}" for x in v) + "]"


class PgVectorStore:
    """Vectors in ``search_vectors`` beside the documents; filters join ``search_docs``."""

    name = "pgvector"

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def prepare(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            await conn.execute(
                f"CREATE TABLE IF NOT EXISTS search_vectors (content_id text PRIMARY KEY,"
                f" embedding vector({DIMS}) NOT NULL)"
            )
            await conn.execute(
                "CREATE INDEX IF NOT EXISTS search_vectors_hnsw ON search_vectors"
                " USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
            )

    async def upsert(self, docs: Sequence[VectorDoc]) -> None:
        if not docs:
            return
        async with self.pool.connection() as conn, conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO search_vectors (content_id, embedding) VALUES (%s, %s::vector)"
                " ON CONFLICT (content_id) DO UPDATE SET embedding = EXCLUDED.embedding",
                [(d.content_id, vector_literal(d.vector)) for d in docs],
            )

    async def set_payloads(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        return None  # the filter fields are the document's own columns

    async def delete(self, content_ids: Sequence[str]) -> None:
        if content_ids:
            async with self.pool.connection() as conn:
                await conn.execute(
                    "DELETE FROM search_vectors WHERE content_id = ANY(%s)", (list(content_ids),)
                )

    async def reset(self) -> None:
        await self.prepare()
        async with self.pool.connection() as conn:
            await conn.execute("TRUNCATE search_vectors")

    async def count(self) -> int:
        async with self.pool.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM search_vectors")).fetchone()
        return int(row[0]) if row else 0

    async def optimize(self) -> bool:
        return False

    async def search(self, vector: np.ndarray, where: SearchFilters, limit: int) -> list[str]:
        params: dict[str, Any] = {"v": vector_literal(vector), "limit": limit}
        clause = filter_clause(where, params)
        async with self.pool.connection() as conn, conn.transaction():
            # iterative scan: a selective filter keeps walking the graph until it has
            # `limit` rows, instead of returning the few of the first ef_search that pass
            await conn.execute("SET LOCAL hnsw.ef_search = 64")
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                "SELECT content_id FROM (SELECT v.content_id, v.embedding <=> %(v)s::vector AS d"
                f" FROM search_vectors v JOIN search_docs USING (content_id) WHERE {clause}"
                " ORDER BY v.embedding <=> %(v)s::vector LIMIT %(limit)s) t ORDER BY d",
                params,
            )
            return [r[0] for r in await cur.fetchall()]

    async def close(self) -> None:
        return None
