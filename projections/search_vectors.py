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

The backends are in projections/search_vector_stores.py; this module is the port and the
filters they share. Why Edge is the default, with the figures, is in docs/search.md. Every
backend runs the same contract suite (tests/test_vector_store.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

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


def floats(v: np.ndarray) -> list[float]:
    return np.asarray(v, dtype=np.float32).tolist()  # type: ignore[no-any-return]
