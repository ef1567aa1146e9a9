"""One contract for every vector store backend: what the search read model relies on.

Run over Qdrant Edge (the embedded default) and Qdrant through qdrant-client (local mode
here; the same adapter talks to a server). pgvector is not in this suite: the only build
available here (in the embedded PostgreSQL wheel) needs AVX-512 and would take the shared
test server down on a CPU without it (docs/portability.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domain.discovery.documents import offer_keys
from domain.discovery.filters import SearchFilters
from projections.search_vector_stores import EdgeVectorStore, QdrantVectorStore
from projections.search_vectors import VectorDoc, VectorStore

Opener = Callable[[], Awaitable[VectorStore]]


@pytest.fixture(params=["edge", "qdrant"])
async def opener(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens the store on the same place again each call (a restart)."""
    opened: list[Any] = []

    async def open_store() -> VectorStore:
        for store, client in opened:
            await store.close()
            if client is not None:
                await client.close()
        opened.clear()
        if request.param == "edge":
            store: VectorStore = EdgeVectorStore(tmp_path / "edge")
            client = None
        else:
            from qdrant_client import AsyncQdrantClient

            client = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
            store = QdrantVectorStore(client)
        await store.prepare()
        opened.append((store, client))
        return store

    yield open_store
    for store, client in opened:
        await store.close()
        if client is not None:
            await client.close()


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v)).astype(np.float32)


RNG = np.random.default_rng(7)
BASE = [_unit(RNG.standard_normal(384)) for _ in range(40)]


def _doc(i: int, **payload: Any) -> VectorDoc:
    fields = {
        "kind": "movie" if i % 4 else "series",
        "genres": ["Drama", "Comedy"] if i % 2 else ["Drama"],
        "people": ["Ann Lee"] if i % 5 == 0 else [],
        "year": 1980 + i,
        "rating": None if i % 3 == 0 else ("PG" if i % 3 == 1 else "R"),
        "offer_keys": offer_keys([("US", "netflix", "subscription")]) if i < 20 else [],
    }
    fields.update(payload)
    return VectorDoc(f"c{i}", f"h{i}", BASE[i], fields)


async def test_nearest_first_and_every_filter_inside_the_search(opener: Opener) -> None:
    store = await opener()
    await store.upsert([_doc(i) for i in range(40)])
    assert await store.count() == 40
    q = _unit(BASE[7] + 0.05 * BASE[8])
    hits = await store.search(q, SearchFilters(), 3)
    assert hits[0] == "c7" and len(hits) == 3

    async def ids(f: SearchFilters, limit: int = 40) -> set[str]:
        got = await store.search(q, f, limit)
        assert len(got) == len(set(got))
        return set(got)

    assert await ids(SearchFilters(kinds=("series",))) == {f"c{i}" for i in range(0, 40, 4)}
    assert await ids(SearchFilters(genres=("Drama", "Comedy"))) == {
        f"c{i}" for i in range(1, 40, 2)
    }  # all of the genres
    assert await ids(SearchFilters(people=("Ann Lee",))) == {f"c{i}" for i in range(0, 40, 5)}
    assert await ids(SearchFilters(year_from=2010, year_to=2012)) == {"c30", "c31", "c32"}
    assert await ids(SearchFilters(region="US", platforms=("netflix",))) == {
        f"c{i}" for i in range(20)
    }
    # PG-13 admits PG, not R; unrated titles only under the "allowed" policy
    assert await ids(SearchFilters(max_rating="PG-13")) == {f"c{i}" for i in range(1, 40, 3)}
    assert await ids(SearchFilters(max_rating="PG-13", unrated_as="allowed")) == {
        f"c{i}" for i in range(40) if i % 3 != 2
    }
    # a narrow filter still fills the page: the graph walk is filtered, not the answer
    assert len(await ids(SearchFilters(kinds=("series",)), 5)) == 5


async def test_payloads_deletes_reset_and_restart(opener: Opener) -> None:
    store = await opener()
    await store.upsert([_doc(i) for i in range(10)])
    # the filter fields follow the documents without a new vector
    await store.set_payloads([("c3", {**_doc(3).payload, "genres": ["Western"]})])
    assert await store.search(BASE[3], SearchFilters(genres=("Western",)), 5) == ["c3"]
    # a payload for a point that has no vector yet creates nothing
    await store.set_payloads([("nope", {"kind": "movie"})])
    assert await store.count() == 10
    await store.delete(["c3", "c4", "never-there"])
    assert await store.count() == 8
    assert "c3" not in await store.search(BASE[3], SearchFilters(), 10)
    # an upsert of the same id replaces its vector
    await store.upsert([VectorDoc("c5", "h5b", BASE[30], _doc(5).payload)])
    assert (await store.search(BASE[30], SearchFilters(), 1)) == ["c5"]
    await store.optimize()  # building the index changes no answer
    assert (await store.search(BASE[30], SearchFilters(), 1)) == ["c5"]

    store = await opener()  # restart: everything written is still there
    assert await store.count() == 8
    assert await store.search(BASE[3], SearchFilters(genres=("Western",)), 5) == []
    await store.reset()
    assert await store.count() == 0
    assert await store.search(BASE[1], SearchFilters(), 5) == []
