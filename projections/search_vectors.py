"""Where title vectors live and how they are searched: pgvector or a Qdrant server.

The default on one machine is pgvector, in the same PostgreSQL as the search documents:
the vector search then filters with the very ``WHERE`` clause the full-text and trigram
retrievers use, inside the HNSW scan (``hnsw.iterative_scan``), and vectors are written
in the row they belong to. Qdrant's local mode was measured here at 101 ms per filtered
query over 10,000 points and 1.1 s over 100,000 (it scans payloads in Python, and warns
above 20,000 points), far from the latency budget. With ``QDRANT_URL`` set (a Qdrant
server, HNSW with payload indexes) the vectors go to its ``content`` collection instead,
with the filter fields as payload.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from psycopg import AsyncConnection

from domain.discovery.documents import filter_keys
from domain.discovery.filters import SearchFilters, allowed_ratings, unrated_admitted

COLLECTION = "content"
DIMS = 384


def vector_literal(v: Sequence[float] | np.ndarray) -> str:
    return "[" + ",".join(f"{float(x):.6f}" for x in v) + "]"


@dataclass(frozen=True, slots=True)
class VectorDoc:
    content_id: str
    text_hash: str
    vector: np.ndarray
    payload: dict[str, Any]


class VectorStore(Protocol):
    name: str

    async def prepare(self) -> None: ...
    async def write(self, conn: AsyncConnection[Any], docs: Sequence[VectorDoc]) -> None: ...
    async def set_payloads(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> None: ...
    async def delete(self, content_ids: Sequence[str]) -> None: ...
    async def reset(self) -> None: ...
    async def search(
        self, conn: AsyncConnection[Any], vector: np.ndarray, where: SearchFilters, limit: int
    ) -> list[str]: ...


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


class PgVectorStore:
    name = "pgvector"

    async def prepare(self) -> None:
        return None

    async def write(self, conn: AsyncConnection[Any], docs: Sequence[VectorDoc]) -> None:
        # only if the text is still the one embedded: a newer text waits for its own vector
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE search_docs SET embedding = %s::vector, embedded_hash = %s"
                " WHERE content_id = %s AND text_hash = %s",
                [(vector_literal(d.vector), d.text_hash, d.content_id, d.text_hash) for d in docs],
            )

    async def set_payloads(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        return None  # the filter fields are the row's own columns

    async def delete(self, content_ids: Sequence[str]) -> None:
        return None  # the vector goes with its row

    async def reset(self) -> None:
        return None

    async def search(
        self, conn: AsyncConnection[Any], vector: np.ndarray, where: SearchFilters, limit: int
    ) -> list[str]:
        params: dict[str, Any] = {"v": vector_literal(vector), "limit": limit}
        clause = filter_clause(where, params)
        async with conn.transaction():
            # iterative scan: a selective filter keeps walking the graph until it has
            # `limit` rows, instead of returning the few of the first ef_search that pass
            await conn.execute("SET LOCAL hnsw.ef_search = 64")
            await conn.execute("SET LOCAL hnsw.iterative_scan = relaxed_order")
            cur = await conn.execute(
                "SELECT content_id FROM (SELECT content_id, embedding <=> %(v)s::vector AS d"
                f" FROM search_docs WHERE embedding IS NOT NULL AND {clause}"
                " ORDER BY embedding <=> %(v)s::vector LIMIT %(limit)s) t ORDER BY d",
                params,
            )
            return [r[0] for r in await cur.fetchall()]


_POINT_NS = uuid.UUID("0f4c5a1e-3b8d-4f6a-9c2e-7d1b5e3a9f40")


def point_id(content_id: str) -> str:
    """Qdrant wants UUIDs or integers; content ids are neither, so derive one."""
    return str(uuid.uuid5(_POINT_NS, content_id))


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
            fields = {k: models.PayloadSchemaType.KEYWORD for k in
                      ("kind", "genres", "people", "offer_keys", "rating")}  # fmt: skip
            fields["year"] = models.PayloadSchemaType.INTEGER
            with warnings.catch_warnings():
                # local mode (tests) has no payload indexes and says so; a server uses them
                warnings.simplefilter("ignore", UserWarning)
                for name, kind in fields.items():
                    await self.client.create_payload_index(COLLECTION, name, kind)

    async def write(self, conn: AsyncConnection[Any], docs: Sequence[VectorDoc]) -> None:
        from qdrant_client import models

        if not docs:
            return
        await self.client.upsert(
            COLLECTION,
            points=[
                models.PointStruct(
                    id=point_id(d.content_id),
                    vector=[float(x) for x in d.vector],
                    payload={**d.payload, "content_id": d.content_id},
                )
                for d in docs
            ],
            wait=True,
        )
        # recorded after Qdrant has it: a crash in between only embeds it again
        await conn.execute(
            "UPDATE search_docs SET embedded_hash = t.h FROM unnest(%s::text[], %s::text[])"
            " AS t(id, h) WHERE content_id = t.id AND text_hash = t.h",
            ([d.content_id for d in docs], [d.text_hash for d in docs]),
        )

    async def set_payloads(self, docs: Sequence[tuple[str, dict[str, Any]]]) -> None:
        from qdrant_client import models

        if not docs:
            return
        await self.client.batch_update_points(
            COLLECTION,
            update_operations=[
                models.SetPayloadOperation(
                    set_payload=models.SetPayload(
                        payload={**payload, "content_id": cid}, points=[point_id(cid)]
                    )
                )
                for cid, payload in docs
            ],
            wait=True,
        )

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

    async def search(
        self, conn: AsyncConnection[Any], vector: np.ndarray, where: SearchFilters, limit: int
    ) -> list[str]:
        from qdrant_client import models

        must: list[Any] = []
        if where.kinds:
            must.append(
                models.FieldCondition(key="kind", match=models.MatchAny(any=list(where.kinds)))
            )
        for g in where.genres:
            must.append(models.FieldCondition(key="genres", match=models.MatchValue(value=g)))
        for p in where.people:
            must.append(models.FieldCondition(key="people", match=models.MatchValue(value=p)))
        if where.year_from is not None or where.year_to is not None:
            must.append(
                models.FieldCondition(
                    key="year", range=models.Range(gte=where.year_from, lte=where.year_to)
                )
            )
        keys = filter_keys(where.region, where.platforms, where.offer_types)
        if keys is not None:
            must.append(models.FieldCondition(key="offer_keys", match=models.MatchAny(any=keys)))
        should_rating: list[Any] = []
        if where.max_rating:
            should_rating = [
                models.FieldCondition(
                    key="rating", match=models.MatchAny(any=allowed_ratings(where.max_rating))
                )
            ]
            if unrated_admitted(where.max_rating, where.unrated_as):
                # is_empty matches a missing key, null and []: an unrated title
                should_rating.append(
                    models.IsEmptyCondition(is_empty=models.PayloadField(key="rating"))
                )
        flt = models.Filter(
            must=must + ([models.Filter(should=should_rating)] if should_rating else [])
        )
        res = await self.client.query_points(
            COLLECTION, query=[float(x) for x in vector], query_filter=flt, limit=limit
        )
        return [str((p.payload or {}).get("content_id")) for p in res.points]
