"""Recommendations end to end: MovieLens plays -> playback, library and activity events ->
the interactions projector -> background training -> the API's rows, fold-in, feedback,
similar titles and services, on real PostgreSQL, Redis and the embedded log."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from mgw import demo
from tests.identity_helpers import new_user
from tests.test_search import SECRET
from tests.test_search import _deliver as deliver
from tests.test_search import _nf as netflix_title

TITLES = 400


@pytest.fixture(scope="module")
def recs_client(tmp_path_factory: pytest.TempPathFactory, services: Any) -> Iterator[TestClient]:
    from mgw.app import create_app
    from tests.conftest import TEST_IDENTITY

    name = f"recs_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("recs") / "data",
        database_url=services.db_uri(name),
        redis_url=f"unix://{services.redis_socket}?db=13",
        batch_linger_ms=0,
        embeddings="none",
        webhook_secrets=(("netflix", SECRET),),
        # one model from the seeded plays; the tests retrain by hand when they need to
        recs_retrain_changes=10_000_000,
        recs_retrain_s=1e9,
        identity=TEST_IDENTITY,
    )
    with TestClient(create_app(settings)) as c:
        c.app.state.db_uri = services.db_uri(name)  # type: ignore[attr-defined]
        events = list(demo.content_events(limit=TITLES))
        known = {e.key for e in events}
        plays = list(demo.rating_plays(known=known))
        publisher = c.app.state.mgw.publisher

        async def seed() -> None:
            await publisher.publish_many(events)
            for i in range(0, len(plays), 5000):
                await publisher.publish_many(plays[i : i + 5000])

        c.portal.call(seed)  # type: ignore[union-attr]
        c.app.state.plays = len(plays)  # type: ignore[attr-defined]
        _wait(lambda: _sql(c, "SELECT count(*) FROM rec_models")[0][0] >= 1, 180)
        _wait(lambda: _recs(c, new_user(c)[1])["model_version"] != "popularity", 30)
        yield c


def _sql(c: TestClient, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(c.app.state.db_uri, autocommit=True) as conn:  # type: ignore[attr-defined]
        return conn.execute(sql, args).fetchall()


def _wait(ok: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def _recs(c: TestClient, h: dict[str, str], **params: Any) -> dict[str, Any]:
    r = c.get("/v1/me/recommendations", params=params, headers=h)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _cid(c: TestClient, title: str) -> str:
    rows = _sql(c, "SELECT content_id FROM content WHERE title = %s ORDER BY content_id", title)
    assert rows, title
    return str(rows[0][0])


def _watch(c: TestClient, h: dict[str, str], content_id: str) -> str:
    """A finished play, as a player reports it; the consistency token of the stop."""
    body = {"content_id": content_id, "device_id": "tv", "kind": "stop",
            "position_s": 5800, "duration_s": 6000}  # fmt: skip
    r = c.post("/v1/playback/events", json=body, headers=h)
    assert r.status_code == 202, r.text
    return str(r.headers["X-Consistency-Token"])


def _until_changed(c: TestClient, h: dict[str, str], gone: str) -> dict[str, Any]:
    """Recommendations once ``gone`` has left them (the fold-in needs no retrain)."""
    deadline = time.monotonic() + 10
    while True:
        out = _recs(c, h, limit=20)
        if gone not in [i["id"] for i in out["items"]]:
            return out
        assert time.monotonic() < deadline, f"{gone} still recommended"
        time.sleep(0.05)


def test_the_model_trained_on_the_plays_in_the_background(recs_client: TestClient) -> None:
    c = recs_client
    (version, users, items, interactions) = _sql(
        c, "SELECT version, users, items, interactions FROM rec_models"
    )[0]
    assert users > 100 and items > 100
    assert interactions >= c.app.state.plays * 0.9  # type: ignore[attr-defined]
    assert _recs(c, new_user(c)[1])["model_version"] == version


def test_a_new_viewer_gets_popular_titles_then_personal_ones(recs_client: TestClient) -> None:
    c = recs_client
    _, h = new_user(c)
    cold = _recs(c, h, limit=10)
    assert len(cold["items"]) == 10
    assert all(i["reason"] == "Popular right now" for i in cold["items"])
    toy = _cid(c, "Toy Story")
    token = _watch(c, h, toy)
    warm = c.get("/v1/me/recommendations", params={"limit": 10},
                 headers={**h, "X-Consistency-Token": token}).json()  # fmt: skip
    ids = [i["id"] for i in warm["items"]]
    assert toy not in ids, "a finished title is never recommended"
    assert ids != [i["id"] for i in cold["items"]]
    assert any(i["reason"].endswith("Toy Story") for i in warm["items"]), warm["items"]

    def explained() -> bool:  # the play became a watch: the library's WatchRecorded
        items = _recs(c, h, limit=10)["items"]
        return any(i["reason"] == "Because you watched Toy Story" for i in items)

    _wait(explained, 10)
    # the scores are the ranking: best first
    scores = [i["score"] for i in warm["items"]]
    assert scores[0] == max(scores)


def test_rows_for_a_home_screen_name_real_history(recs_client: TestClient) -> None:
    c = recs_client
    _, h = new_user(c)
    for title in ("Heat", "GoldenEye"):
        token = _watch(c, h, _cid(c, title))
    seen = {**h, "X-Consistency-Token": token}
    body: dict[str, Any] = {}

    def watched() -> bool:  # the plays became watches: the library's WatchRecorded
        nonlocal body
        r = c.get("/v1/me/recommendations/rows", params={"limit": 5}, headers=seen)
        assert r.status_code == 200, r.text
        body = r.json()
        return any(row["id"].startswith("because_you_watched") for row in body["rows"])

    _wait(watched, 10)
    rows = {row["id"].split(":")[0]: row for row in body["rows"]}
    assert {"top_picks", "because_you_watched", "trending"} <= set(rows)
    because = [row for row in body["rows"] if row["id"].startswith("because_you_watched")]
    assert {row["title"] for row in because} <= {
        "Because you watched Heat", "Because you watched GoldenEye"}  # fmt: skip
    shown = [i["id"] for row in body["rows"] for i in row["items"]]
    assert len(shown) == len(set(shown)), "no title twice on one screen"
    assert _cid(c, "Heat") not in shown and _cid(c, "GoldenEye") not in shown
    assert body["model_version"] != "popularity"


def test_not_interested_and_a_finished_play_change_the_list(recs_client: TestClient) -> None:
    c = recs_client
    _, h = new_user(c)
    _watch(c, h, _cid(c, "Jumanji"))
    first = _until_changed(c, h, _cid(c, "Jumanji"))
    top = first["items"][0]["id"]
    r = c.post("/v1/me/recommendations/feedback", json={"content_id": top,
               "kind": "not_interested"}, headers=h)  # fmt: skip
    assert r.status_code == 202, r.text
    seen = {**h, "X-Consistency-Token": r.headers["X-Consistency-Token"]}
    after = c.get("/v1/me/recommendations", params={"limit": 20}, headers=seen).json()
    assert top not in [i["id"] for i in after["items"]]
    facts = _sql(c, "SELECT not_interested FROM rec_interactions WHERE content_id = %s"
                 " AND user_id = (SELECT user_id FROM rec_interactions WHERE content_id = %s"
                 " AND not_interested LIMIT 1)", top, top)  # fmt: skip
    assert facts and facts[0][0] is True
    nxt = after["items"][0]["id"]
    _watch(c, h, nxt)
    assert nxt not in [i["id"] for i in _until_changed(c, h, nxt)["items"]]


def test_feedback_and_activity_refuse_bad_input_naming_the_field(recs_client: TestClient) -> None:
    c = recs_client
    _, h = new_user(c)
    r = c.post("/v1/me/recommendations/feedback", json={"content_id": "x", "kind": "meh"},
               headers=h)  # fmt: skip
    assert r.status_code == 422 and "kind" in r.text
    r = c.post("/v1/activity", json={"events": [{"event_id": "a", "kind": "click"}]}, headers=h)
    assert r.status_code == 422 and "content_id" in r.text
    r = c.post("/v1/activity", json={"events": []}, headers=h)
    assert r.status_code == 422 and "events" in r.text
    assert c.get("/v1/me/recommendations", params={"limit": 0}, headers=h).status_code == 422
    assert c.get("/v1/me/recommendations", params={"row": "x"}, headers=h).status_code == 422
    assert c.get("/v1/me/recommendations").status_code == 401


def test_activity_counts_a_repeated_event_once(recs_client: TestClient) -> None:
    c = recs_client
    user, h = new_user(c)
    toy = _cid(c, "Toy Story")
    batch = {"events": [
        {"event_id": "e1", "kind": "impression", "content_id": toy, "surface": "home"},
        {"event_id": "e2", "kind": "click", "content_id": toy, "surface": "home",
         "position": 1},
    ]}  # fmt: skip
    for _ in range(2):  # a client unsure the first batch arrived sends it again
        r = c.post("/v1/activity", json=batch, headers=h)
        assert r.status_code == 202, r.text
        assert r.json()["accepted"] == 2
    token = r.headers["X-Consistency-Token"]
    assert (
        c.get("/v1/me/recommendations", headers={**h, "X-Consistency-Token": token}).status_code
        == 200
    )
    rows = _sql(c, "SELECT clicks, impressions FROM rec_interactions"
                " WHERE user_id = %s AND content_id = %s", user, toy)  # fmt: skip
    assert rows == [(1, 1)]
    kinds = _sql(c, "SELECT kind FROM activity_events WHERE user_id = %s ORDER BY kind", user)
    assert [k for (k,) in kinds] == ["click", "impression"]


def test_similar_titles_need_no_sign_in(recs_client: TestClient) -> None:
    c = recs_client
    toy = _cid(c, "Toy Story")
    r = c.get(f"/v1/content/{toy}/similar", params={"limit": 5})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) == 5 and toy not in [i["id"] for i in items]
    assert all(i["reason"] == "Similar to Toy Story" for i in items)
    assert c.get("/v1/content/nope/similar").status_code == 404


def test_services_mine_keeps_titles_on_my_services(recs_client: TestClient) -> None:
    c = recs_client
    deliver(c, "netflix", {"titles": [
        netflix_title(9101, "Recs Only On Netflix", 2001, "tt9900101"),
        netflix_title(9102, "Recs Also On Netflix", 2002, "tt9900102"),
    ]})  # fmt: skip
    _wait(
        lambda: len(_sql(c, "SELECT 1 FROM search_docs WHERE 'netflix' = ANY(platforms)")) >= 2, 60
    )
    _, h = new_user(c)
    r = c.get("/v1/me/recommendations", params={"services": "mine"}, headers=h)
    assert r.status_code == 409 and "services" in r.text
    r = c.put("/v1/me/services", json={"region": "US", "platforms": ["netflix"]}, headers=h)
    assert r.status_code in (200, 202), r.text
    token = r.headers["X-Consistency-Token"]
    _wait(lambda: _on_netflix(c, h, token), 20)  # the catalog copy reloads every 10 s


def _on_netflix(c: TestClient, h: dict[str, str], token: str) -> bool:
    r = c.get("/v1/me/recommendations", params={"services": "mine"},
              headers={**h, "X-Consistency-Token": token})  # fmt: skip
    if r.status_code != 200:
        return False
    titles = {i["title"] for i in r.json()["items"]}
    return titles == {"Recs Only On Netflix", "Recs Also On Netflix"}


def test_a_retrained_model_is_swapped_in_without_a_failed_request(
    recs_client: TestClient,
) -> None:
    from projections.recs_training import train_once

    c = recs_client
    _, h = new_user(c)
    before = _recs(c, h)["model_version"]
    ctx = c.app.state.mgw

    async def retrain() -> str | None:
        return await train_once(ctx.stores.pg, ctx.settings.recs_path)

    time.sleep(1.1)  # versions are named by the second they were trained in
    new = c.portal.call(retrain)  # type: ignore[union-attr]
    assert new and new != before
    deadline = time.monotonic() + 15
    while True:
        out = _recs(c, h)  # every answer on the way is a 200 from one whole model
        if out["model_version"] == new:
            break
        assert out["model_version"] == before
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_an_experiment_on_the_surface_assigns_and_changes_the_model(
    recs_client: TestClient,
) -> None:
    from tests.identity_helpers import admin_headers

    c = recs_client
    admin = admin_headers(c)
    body = {
        "surface": "recommendations",
        "variants": [
            {"name": "personal", "weight": 50, "params": {}},
            {"name": "popular", "weight": 50, "params": {"model": "popularity"}},
        ],
        "primary_metric": "ctr",
        "guardrail_metrics": [],
    }
    r = c.put("/v1/admin/experiments/recs-popular", json=body, headers=admin)
    assert r.status_code in (200, 201, 202), r.text
    r = c.post("/v1/admin/experiments/recs-popular/start", headers=admin)
    assert r.status_code in (200, 202), r.text
    try:
        seen: dict[str, str] = {}
        for _ in range(12):
            _, h = new_user(c)
            out = _recs(c, h)
            deadline = time.monotonic() + 5
            while out["experiment"] is None and time.monotonic() < deadline:
                time.sleep(0.1)  # the running set is cached briefly
                out = _recs(c, h)
            assert out["experiment"]["key"] == "recs-popular"
            again = _recs(c, h)
            assert again["experiment"] == out["experiment"], "one user, one variant"
            variant = out["experiment"]["variant"]
            seen[variant] = out["model_version"]
        assert set(seen) == {"personal", "popular"}
        assert seen["popular"] == "popularity" and seen["personal"] != "popularity"
        _wait(lambda: _sql(c, "SELECT count(*) FROM experiment_exposures"
                              " WHERE experiment = 'recs-popular'")[0][0] == 12, 20)  # fmt: skip
    finally:
        c.post("/v1/admin/experiments/recs-popular/stop", json={"reason": "test over"},
               headers=admin)  # fmt: skip


def test_personalized_search_reorders_by_taste(recs_client: TestClient) -> None:
    c = recs_client
    assert c.get("/v1/search", params={"q": "story", "personalize": "true"}).status_code == 401
    _, h = new_user(c)
    for title in ("Toy Story", "Babe", "Balto"):
        token = _watch(c, h, _cid(c, title))
    params = {"q": "story", "limit": 100}
    plain = c.get("/v1/search", params=params, headers=h).json()
    mine = c.get("/v1/search", params={**params, "personalize": "true"},
                 headers={**h, "X-Consistency-Token": token})  # fmt: skip
    assert mine.status_code == 200, mine.text
    body = mine.json()
    assert body["personalized"] is True and plain["personalized"] is False
    assert sorted(i["id"] for i in body["items"]) == sorted(i["id"] for i in plain["items"])
    assert c.get("/v1/search", params={**params, "personalize": "maybe"},
                 headers=h).status_code == 422  # fmt: skip


def test_not_interested_can_be_taken_back(recs_client: TestClient) -> None:
    c = recs_client
    user, h = new_user(c)
    _watch(c, h, _cid(c, "Toy Story"))
    top = _until_changed(c, h, _cid(c, "Toy Story"))["items"][0]["id"]
    r = c.post("/v1/me/recommendations/feedback", json={"content_id": top,
               "kind": "not_interested"}, headers=h)  # fmt: skip
    seen = {**h, "X-Consistency-Token": r.headers["X-Consistency-Token"]}
    gone = c.get("/v1/me/recommendations", params={"limit": 20}, headers=seen)
    assert top not in [i["id"] for i in gone.json()["items"]]
    r = c.delete(f"/v1/me/recommendations/feedback/{top}", headers=h)
    assert r.status_code == 202, r.text
    seen = {**h, "X-Consistency-Token": r.headers["X-Consistency-Token"]}
    back = c.get("/v1/me/recommendations", params={"limit": 20}, headers=seen)
    assert top in [i["id"] for i in back.json()["items"]]
    facts = _sql(c, "SELECT not_interested FROM rec_interactions"
                 " WHERE user_id = %s AND content_id = %s", user, top)  # fmt: skip
    assert facts == [(False,)]
    assert c.delete("/v1/me/recommendations/feedback/x", headers={}).status_code == 401
