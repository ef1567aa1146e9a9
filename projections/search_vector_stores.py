"""The vector store backends behind the port in projections/search_vectors.py: Qdrant
Edge in-process (the default), a Qdrant server, and pgvector (opt-in)."""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from psycopg_pool import AsyncConnectionPool

from domain.discovery.filters import SearchFilters
from projections.search_vectors import (
    COLLECTION,
    DIMS,
    INTEGER_FIELDS,
    KEYWORD_FIELDS,
    Condition,
    VectorDoc,
    filter_clause,
    floats,
    point_id,
    vector_conditions,
)


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
                point_id(d.content_id), floats(d.vector), {**d.payload, "content_id": d.content_id}
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
            query=qe.Query.Nearest(floats(vector)),
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
                    vector=floats(d.vector),
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
            COLLECTION, query=floats(vector), query_filter=self._filter(where), limit=limit
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
