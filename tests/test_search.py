"""Search end to end through the API: a catalog of real MovieLens titles (with their TMDB
overviews) and two platforms' offers, indexed by the real indexer with the real model."""

from __future__ import annotations

import csv
import gzip
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from domain.catalog.webhooks import sign
from domain.discovery.ranking import DEFAULT_WEIGHTS
from mgw import demo
from mgw.app import create_app
from tests.conftest import _TEMPLATE, TEST_IDENTITY, Services
from tests.identity_helpers import admin_headers, new_user

SECRET = "search-tests"
#: MovieLens ids: the first 300 titles (1995 and around) plus well-known later ones
EXTRA = {
    "858", "1221", "4022", "2571", "3114", "1214", "1200", "260", "1580", "1270", "2716",
    "480", "1721", "6377", "4306", "296", "356", "1240", "589", "2959", "79132", "58559",
    "1136", "2762", "318", "593", "1197", "1291", "4993", "5952", "7153", "68954", "60069",
}  # fmt: skip


@pytest.fixture(scope="module")
def catalog(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    name = f"search_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    tmp = tmp_path_factory.mktemp("search")
    settings = Settings(
        data_dir=tmp / "data",
        database_url=services.db_uri(name),
        redis_url=f"unix://{services.redis_socket}?db=15",
        batch_linger_ms=0,
        webhook_secrets=(("netflix", SECRET), ("hulu", SECRET)),
        identity=TEST_IDENTITY,
    )
    wanted: set[str] = set(EXTRA)
    with gzip.open(demo.DATA, "rt", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i < 300:
                wanted.add(row["movieId"])
    ids = {demo.content_id_for(m) for m in wanted}
    events = [e for e in demo.content_events() if e.key in ids]
    with TestClient(create_app(settings)) as c:
        pub = c.app.state.mgw.publisher  # type: ignore[attr-defined]
        c.portal.call(pub.publish_many, events)  # type: ignore[union-attr]
        # offers: Toy Story, The Matrix and Jumanji on Netflix (US), Heat on Hulu (US, ads)
        _deliver(c, "netflix", {"titles": [
            _nf(1, "Toy Story", 1995, "tt0114709"), _nf(2, "The Matrix", 1999, "tt0133093"),
            _nf(3, "Jumanji", 1995, "tt0113497"),
        ]})  # fmt: skip
        _deliver(
            c, "hulu", _hulu("5d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a", "Heat", 1995, "tt0113277")
        )
        _wait_indexed(c, len(events))
        yield c


def _nf(nid: int, title: str, year: int, imdb: str) -> dict[str, Any]:
    return {
        "netflixId": nid, "type": "movie", "title": title, "releaseYear": year,
        "runtimeMinutes": 100, "genres": ["Dramas"], "imdbId": imdb,
        "availability": [{"country": "US", "plan": "standard", "maxQuality": "HD",
                          "startDate": "2020-01-01"}],
        "links": {"web": f"https://www.netflix.com/title/{nid}", "app": f"nflx://title/{nid}"},
    }  # fmt: skip


def _hulu(hid: str, title: str, year: int, imdb: str) -> bytes:
    rec = {
        "id": hid, "entity_type": "movie", "name": title, "release_year": year,
        "duration": 10200, "genre_names": ["drama"], "external_ids": {"imdb": imdb},
        "availability": [{"region": "us", "package": "hulu_with_ads", "quality": "hd",
                          "start_ms": 1577836800000}],
    }  # fmt: skip
    return (json.dumps(rec) + "\n").encode()


def _deliver(c: TestClient, platform: str, body: dict[str, Any] | bytes) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    ts = int(time.time())
    r = c.post(
        f"/v1/webhooks/{platform}",
        content=raw,
        headers={
            "content-type": "application/json",
            "X-MGW-Timestamp": str(ts),
            "X-MGW-Signature": sign(SECRET, ts, raw),
            "X-MGW-Delivery": uuid.uuid4().hex,
        },
    )
    assert r.status_code in (200, 202), r.text


def _wait_indexed(c: TestClient, n: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        s = c.get("/v1/search/status").json()
        if s["caught_up"]:
            return
        assert time.monotonic() < deadline, s
        time.sleep(0.3)


def search(c: TestClient, **params: Any) -> dict[str, Any]:
    r = c.get("/v1/search", params=params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def titles(body: dict[str, Any]) -> list[str]:
    return [i["title"] for i in body["items"]]


# -- retrievers, each on its own -------------------------------------------------------


def _engine(c: TestClient) -> Any:
    return c.app.state.mgw.search  # type: ignore[attr-defined]


def _titles_of(c: TestClient, ids: list[str]) -> list[str]:
    from projections.search import hydrate

    async def go() -> list[str]:
        async with _engine(c).pool.connection() as conn:
            hits = await hydrate(conn, ids)
        return [hits[i].title for i in ids]

    return c.portal.call(go)  # type: ignore[union-attr,no-any-return]


def test_each_retriever_finds_what_it_is_for(catalog: TestClient) -> None:
    from domain.discovery.filters import SearchFilters

    eng, none = _engine(catalog), SearchFilters()
    full = catalog.portal.call(eng.fulltext_ids, ["stranded", "island", "fedex"], none, 10)  # type: ignore[union-attr]
    assert "Cast Away" in _titles_of(catalog, full)[:3]
    tri = catalog.portal.call(eng.trigram_ids, "termnator", none, 10)  # type: ignore[union-attr]
    assert "Terminator" in _titles_of(catalog, tri)[0]
    vec = catalog.portal.call(  # type: ignore[union-attr]
        eng.vector_ids, "toys that come alive when their owner is away", none, 10
    )
    assert any(t.startswith("Toy Story") for t in _titles_of(catalog, vec)[:3])


def test_hybrid_finds_known_items_typos_and_descriptions(catalog: TestClient) -> None:
    assert titles(search(catalog, q="toy story"))[0] == "Toy Story"
    body = search(catalog, q="godfahter")
    assert titles(body)[0] == "The Godfather"
    assert body["did_you_mean"] == "godfather"
    body = search(catalog, q="a man stranded on a desert island after a plane crash")
    assert "Cast Away" in titles(body)[:3]
    explained = search(catalog, q="toy story", explain="true")["items"][0]["explain"]
    assert set(explained["ranks"]) == {"fulltext", "trigram", "vector"}


def test_filters_apply_inside_retrieval(catalog: TestClient) -> None:
    # the best matches for "toy story" are mostly not on Netflix: the page still fills
    # with Netflix titles only (Toy Story, The Matrix, Jumanji)
    body = search(catalog, q="toy story", platform="netflix", region="US")
    assert set(titles(body)) == {"Toy Story", "The Matrix", "Jumanji"}
    for item in body["items"]:
        assert [p["platform"] for p in item["availability"]["platforms"]] == ["netflix"]
    assert titles(search(catalog, q="heat", offer="ads", region="US")) == ["Heat"]
    assert search(catalog, q="heat", offer="ads", region="GB")["items"] == []
    body = search(catalog, q="space adventure", genre="Sci-Fi", year_from="1990", year_to="1999")
    assert body["items"]
    for item in body["items"]:
        assert "Sci-Fi" in item["genres"] and 1990 <= item["year"] <= 1999


def test_facets_count_the_result_set(catalog: TestClient) -> None:
    body = search(catalog, q="animated adventure", intent="false", genre="Animation")
    genre = {f["value"]: f["count"] for f in body["facets"]["genre"]}
    assert genre["Animation"] == body["total"]
    decades = {f["value"]: f["count"] for f in body["facets"]["decade"]}
    assert sum(decades.values()) <= body["total"]
    plats = {f["value"]: f["count"] for f in search(catalog, q="toy")["facets"]["platform"]}
    assert plats.get("netflix", 0) >= 1


def test_intent_becomes_filters(catalog: TestClient) -> None:
    body = search(catalog, q="funny sci-fi from the 90s")
    assert body["filters"]["genres"] == ["Comedy", "Sci-Fi"]
    assert (body["filters"]["year_from"], body["filters"]["year_to"]) == (1990, 1999)
    assert body["items"]
    for item in body["items"]:
        assert {"Comedy", "Sci-Fi"} <= set(item["genres"])
    body = search(catalog, q="movies on netflix")
    assert body["filters"]["platforms"] == ["netflix"]
    assert set(titles(body)) == {"Toy Story", "The Matrix", "Jumanji"}
    # explicit parameters win; intent=false searches the words as typed
    assert search(catalog, q="movies on netflix", intent="false")["filters"] == {}


def test_empty_query_browses_popular_titles_with_cursor(catalog: TestClient) -> None:
    first = search(catalog, limit=7)
    assert first["mode"] == "browse" and len(first["items"]) == 7 and first["next_cursor"]
    second = search(catalog, limit=7, cursor=first["next_cursor"])
    assert not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
    assert first["facets"]["genre"]


def test_search_pages_do_not_overlap(catalog: TestClient) -> None:
    a = search(catalog, q="war", limit=5)
    b = search(catalog, q="war", limit=5, cursor=a["next_cursor"])
    assert a["next_cursor"] and len(b["items"]) == 5
    assert not {i["id"] for i in a["items"]} & {i["id"] for i in b["items"]}
    r = catalog.get("/v1/search", params={"q": "other", "cursor": a["next_cursor"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "cursor"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"q": "x" * 2001}, "q"),
        ({"q": "heat", "genre": "Space Opera"}, "genre"),
        ({"q": "heat", "platform": "myspace"}, "platform"),
        ({"q": "heat", "offer": "lease"}, "offer"),
        ({"q": "heat", "kind": "podcast"}, "kind"),
        ({"q": "heat", "year_from": "nineteen"}, "year_from"),
        ({"q": "heat", "region": "USA"}, "region"),
        ({"q": "heat", "max_rating": "X"}, "max_rating"),
        ({"q": "heat", "colour": "red"}, "colour"),
        ({"q": "heat", "limit": "0"}, "limit"),
        ({"q": "heat", "cursor": "garbage"}, "cursor"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    catalog: TestClient, params: dict[str, str], field: str
) -> None:
    r = catalog.get("/v1/search", params=params)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["errors"][0]["field"] == field
    if field == "genre":
        assert "Space Opera" in body["detail"]


@pytest.mark.parametrize("q", ["?!...", "the of and a", "🎬🍿", "   ", "'\"\\%_", "x" * 2000])
def test_odd_queries_answer(catalog: TestClient, q: str) -> None:
    r = catalog.get("/v1/search", params={"q": q})
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["items"], list)


def test_long_description_is_a_normal_query(catalog: TestClient) -> None:
    text = (
        "I'm trying to find an animated film I watched as a kid. A cowboy doll is the "
        "favourite toy of a boy named Andy, until his birthday brings a new space ranger "
        "action figure onto the scene. The cowboy gets jealous and plots against the new "
        "toy, and then the two of them get separated from their owner and have to work "
        "together to get back home before the family moves away."
    )
    body = search(catalog, q=text, explain="true")
    assert any(t.startswith("Toy Story") for t in titles(body)[:3]), titles(body)[:5]
    assert "genres" not in body["filters"]  # genre words in a description stay words
    # one response tells how it was read: a description, its own weights, its rare words
    explained = body["explain"]
    assert explained["query_class"] == "description"
    assert explained["weights"]["fulltext"] == DEFAULT_WEIGHTS["description_fulltext"]
    assert "trigram" not in explained["retrievers"]  # a paragraph is no typo of a title
    terms = explained["salient_terms"]
    assert terms and {"cowboy", "andi"} & set(terms), terms
    assert not {"movi", "rememb", "find", "watch"} & set(terms)  # filler is no clue
    short = search(catalog, q="toy story", explain="true")["explain"]
    assert short["query_class"] == "title" and short["salient_terms"] is None
    assert short["weights"]["fulltext"] == DEFAULT_WEIGHTS["fulltext"]


def test_a_remembered_decade_in_a_description_does_not_filter(catalog: TestClient) -> None:
    # Toy Story is from 1995; a wrong recollection must not remove it
    text = (
        "animated thing from the early 2000s i think, a cowboy doll gets jealous of a new "
        "space ranger action figure toy and they end up lost together"
    )
    body = search(catalog, q=text)
    assert "year_from" not in body["filters"], body["filters"]
    assert any(t.startswith("Toy Story") for t in titles(body)[:5]), titles(body)[:5]


def test_autocomplete(catalog: TestClient) -> None:
    def complete(q: str) -> dict[str, Any]:
        r = catalog.get("/v1/autocomplete", params={"q": q})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    toy = [i.get("title") for i in complete("toy")["items"]]
    assert toy[0] in ("Toy Story", "Toy Story 2")
    assert "The Godfather" in [i.get("title") for i in complete("godfa")["items"]]
    assert "The Dark Knight" in [i.get("title") for i in complete("dark kn")["items"]]
    typo = complete("godfahter")
    assert typo["corrected"] == "godfather"
    assert "The Godfather" in [i.get("title") for i in typo["items"]]
    assert {"type": "genre", "value": "Animation"} in complete("anim")["items"]
    assert complete("")["items"] == []
    assert catalog.get("/v1/autocomplete", params={"q": "x" * 201}).status_code == 422


def test_correction_widens_text_retrieval_under_a_profile(catalog: TestClient) -> None:
    # a profile without the vector retriever (which always finds something near)
    profile = "/v1/admin/ranking/profiles/textonly"
    change = {"weights": {"vector": 0}}
    assert catalog.put(profile, json=change).status_code == 401  # an admin's change
    r = catalog.put(profile, json=change, headers=admin_headers(catalog))
    assert r.status_code == 202, r.text
    token = r.headers["X-Consistency-Token"]
    r = catalog.get(
        "/v1/search",
        params={"q": "godfahter", "profile": "textonly"},
        headers={"X-Consistency-Token": token},
    )
    body = r.json()
    assert r.status_code == 200, body
    assert body["profile"]["name"] == "textonly" and body["profile"]["version"] >= 1
    assert body["did_you_mean"] == "godfather"
    assert titles(body)[0] == "The Godfather"
    assert (
        "vector"
        not in search(catalog, q="godfahter", profile="textonly", explain="true")["items"][0][
            "explain"
        ]["ranks"]
    )


def test_searches_and_clicks_reach_analytics(catalog: TestClient) -> None:
    # a signed-in user searches and clicks (the token is optional on both); an anonymous
    # search counts the same
    _, user = new_user(catalog)
    r = catalog.get("/v1/search", params={"q": "Jumanji"}, headers=user)
    assert r.status_code == 200, r.text
    body = r.json()
    hit = body["items"][0]
    assert hit["title"] == "Jumanji"
    r = catalog.post(
        "/v1/search/clicks",
        json={"search_id": body["search_id"], "content_id": hit["id"], "position": 1},
        headers=user,
    )
    assert r.status_code == 202, r.text
    zero = search(catalog, q="zzqxv", intent="false", genre="Western", year_from="2031")
    assert zero["items"] == []
    # the report is for support and admins only
    assert catalog.get("/v1/admin/search/analytics", headers=user).status_code == 403
    admin = admin_headers(catalog)
    deadline = time.monotonic() + 30
    while True:
        report = catalog.get("/v1/admin/search/analytics", headers=admin).json()
        top = {q["query"]: q for q in report["top_queries"]}
        zeros = {q["query"] for q in report["zero_result_queries"]}
        if "jumanji" in top and top["jumanji"]["clicks"] >= 1 and "zzqxv" in zeros:
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.2)
    first = next(p for p in report["ctr_by_position"] if p["position"] == 1)
    assert first["clicks"] >= 1 and first["impressions"] >= 1


# the Qdrant client warns, from a thread, that it cannot reach the server: that is the point
@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_vector_store_down_degrades_to_full_text(settings: Settings) -> None:
    import socket

    with socket.socket() as s:  # a port nothing listens on: Qdrant is down
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = replace(settings, vector_store="qdrant", qdrant_url=f"http://127.0.0.1:{port}")
    events = [e for e in demo.content_events(limit=40)]
    with TestClient(create_app(down)) as c:
        c.portal.call(c.app.state.mgw.publisher.publish_many, events)  # type: ignore[union-attr,attr-defined]
        deadline = time.monotonic() + 60
        while True:
            body = search(c, q="jumanji")
            if body["items"]:
                break
            assert time.monotonic() < deadline, body
            time.sleep(0.3)
        assert body["degraded"] is True and body["items"][0]["title"] == "Jumanji"
        status = c.get("/v1/search/status").json()
        assert status["embedded"] == 0 and status["documents"] > 0  # no vectors written
        metrics = c.get("/metrics").text
        assert 'mgw_search_degraded_total{reason="' in metrics


def test_offers_count_only_while_their_window_is_open(catalog: TestClient) -> None:
    # an offer that starts in the future does not make the title watchable now
    future = _nf(4, "Waiting to Exhale", 1995, "tt0114885")
    future["availability"][0]["startDate"] = "2099-01-01"
    _deliver(catalog, "netflix", {"titles": [future]})
    _wait_indexed(catalog, 0)
    assert "Waiting to Exhale" in titles(search(catalog, q="waiting to exhale"))
    on_netflix = search(catalog, q="waiting to exhale", platform="netflix", region="US")
    assert "Waiting to Exhale" not in titles(on_netflix)

    # an offer that ends with time (no event) leaves the document at the next sweep
    eng = _engine(catalog)

    async def end_jumanji_offer() -> int:
        async with eng.pool.connection() as conn:
            await conn.execute(
                "UPDATE availability SET available_until = now() - interval '1 second'"
                " WHERE platform = 'netflix' AND platform_id = '3'"
            )
            await conn.execute("UPDATE search_sweep SET last_sweep = now() - interval '1 minute'")
        from projections.search_embedding import SearchIndexer

        indexer = SearchIndexer(eng.pool, eng.vectors, embedder=None, cache_path=None)
        queued = await indexer.requeue_offer_changes()
        await indexer.catch_up(vectors=False)
        return queued

    assert "Jumanji" in titles(search(catalog, q="jumanji", platform="netflix", region="US"))
    assert catalog.portal.call(end_jumanji_offer) >= 1  # type: ignore[union-attr]
    assert "Jumanji" not in titles(search(catalog, q="jumanji", platform="netflix", region="US"))


def test_a_described_film_is_found_by_its_meaning(catalog: TestClient) -> None:
    # no title word in the query: the vectors (Qdrant Edge) carry it
    found = titles(search(catalog, q="a lonely robot cleans up an abandoned earth", limit=10))
    assert "WALL·E" in found, found


def test_replay_rebuilds_the_search_documents_identically(catalog: TestClient) -> None:
    """Last in this module: the replay resets the vector store, which re-embeds behind it."""
    from projections import maintenance
    from projections.registry import by_name
    from streams.processing import ProjectionPipeline
    from streams.runner import ProjectorLoop

    mgw = catalog.app.state.mgw  # type: ignore[attr-defined]
    search_projector = by_name("search")

    cols = ", ".join(search_projector.checksum_columns["search_docs"])  # type: ignore[attr-defined]

    async def rows() -> dict[str, str]:  # which documents differ, when the checksums do
        async with mgw.stores.pg.connection() as conn:
            cur = await conn.execute(
                f"SELECT content_id, t::text FROM (SELECT {cols} FROM search_docs) t"
            )
            return {r[0]: r[1] for r in await cur.fetchall()}

    snapshots: list[dict[str, str]] = []

    async def replay() -> tuple[str, int, int, str]:
        snapshots.append(await rows())
        before = await maintenance.checksum(mgw.stores, search_projector)
        await maintenance.clear(mgw.stores, search_projector)
        async with mgw.stores.pg.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM search_docs")).fetchone()
        loop = ProjectorLoop(
            ProjectionPipeline(search_projector, mgw.stores, mgw.log, dead_letters=False),
            mgw.log,
            linger_ms=0,
        )
        applied = await loop.catch_up()
        snapshots.append(await rows())
        return before, row[0], applied, await maintenance.checksum(mgw.stores, search_projector)

    _wait_indexed(catalog, 0)  # every projector the documents come from, search included
    before, emptied, applied, after = catalog.portal.call(replay)  # type: ignore[union-attr]
    assert emptied == 0 and applied > 300
    first, second = snapshots
    changed = {
        k: (first.get(k), second.get(k))
        for k in first.keys() | second.keys()
        if first.get(k) != second.get(k)
    }
    assert not changed, changed
    assert after == before
    assert "Heat" in titles(search(catalog, q="heat"))
