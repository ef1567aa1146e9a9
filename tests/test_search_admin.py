"""Discovery administration end to end: ranking profiles, the scopes that guard them,
search analytics, and their projections under redelivery and replay."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from starlette.requests import Request
from starlette.testclient import TestClient

import api.ranking
from api.context import AppContext
from api.errors import Problem
from api.ranking import resolve_profile
from api.search_analytics import publish_search, search_performed_event
from core.codec import AvroCodec
from core.events import Event
from core.topics import RANKING, SEARCHES
from domain.discovery.ranking import DEFAULT_WEIGHTS, validate_weights
from projections import maintenance
from projections.base import Stores
from projections.ranking import RankingProjector, current_profile, list_profiles
from projections.search_analytics import SearchAnalyticsProjector
from streams.embedded import EmbeddedLog
from streams.log import Position
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import ProjectorLoop
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.identity_helpers import PASSWORD, bearer, new_user, password_login

PROFILES = "/v1/admin/ranking/profiles"
ANALYTICS = "/v1/admin/search/analytics"
DAY = date(2020, 1, 1)  # never "today", so today's clicks stay out of its numbers
T0 = datetime(2020, 1, 1, 12, 0, tzinfo=UTC)


def _ctx(client: TestClient) -> AppContext:
    c: AppContext = client.app.state.mgw  # type: ignore[attr-defined]
    return c


def _problem(r: Any, status: int, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["field"] == field and body["detail"]
    return body


def _put(
    client: TestClient, name: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    return client.put(f"{PROFILES}/{name}", json=body, headers=headers)


def _with_role(
    client: TestClient, admin: dict[str, str], role: str, name: str
) -> tuple[str, dict[str, str]]:
    """A new account the admin grants ``role``, signed in again so its token holds the
    role's scopes: (user id, Authorization headers)."""
    user_id, headers = new_user(client, name)
    email = client.get("/v1/me", headers=headers).json()["email"]
    r = client.put(f"/v1/admin/users/{user_id}/roles/{role}", headers=admin)
    assert r.status_code == 200 and role in r.json()["roles"], r.text
    tokens = password_login(client, email, PASSWORD)
    assert tokens.status_code == 200, tokens.text
    return user_id, bearer(tokens.json())


# -- ranking profiles ----------------------------------------------------------


def test_set_profiles_read_back_history_and_versions(
    client: TestClient, admin: dict[str, str]
) -> None:
    admin_id = client.get("/v1/me", headers=admin).json()["id"]
    listed = client.get(PROFILES, headers=admin).json()["items"]
    assert [p["name"] for p in listed] == ["default"]
    assert listed[0]["version"] == 0 and listed[0]["weights"] == dict(DEFAULT_WEIGHTS)

    r = _put(client, "default", {"weights": {"vector": 1.5}, "description": "more semantic"}, admin)
    assert r.status_code == 202, r.text
    token = r.headers["X-Consistency-Token"]
    assert r.json()["position"] == token and token.startswith(f"{RANKING.name}:0:")
    assert r.json()["version"] == 1 and r.json()["confirmed"] is True
    got = client.get(f"{PROFILES}/default", headers={**admin, "X-Consistency-Token": token}).json()
    assert got["profile"]["version"] == 1
    assert got["profile"]["weights"] == {**DEFAULT_WEIGHTS, "vector": 1.5}
    assert got["profile"]["description"] == "more semantic" and got["profile"]["set_at"]

    # a second partial update, by another admin, builds on the first and keeps its
    # description; each version records who set it
    ops_id, ops = _with_role(client, admin, "admin", "ops")
    r2 = _put(client, "default", {"weights": {"trigram": 0.2, "rrf_k": 30}}, ops)
    assert r2.status_code == 202 and r2.json()["version"] == 2
    got = client.get(
        f"{PROFILES}/default", headers={**admin, "X-Consistency-Token": r2.json()["position"]}
    ).json()
    want = {**DEFAULT_WEIGHTS, "vector": 1.5, "trigram": 0.2, "rrf_k": 30.0}
    assert got["profile"]["weights"] == want
    assert got["profile"]["description"] == "more semantic"
    assert got["profile"]["set_by"] == ops_id
    assert [h["version"] for h in got["history"]] == [2, 1]
    assert [h["set_by"] for h in got["history"]] == [ops_id, admin_id]
    assert got["history"][1]["weights"] == {**DEFAULT_WEIGHTS, "vector": 1.5}

    # history pages newest first
    page = client.get(f"{PROFILES}/default?limit=1", headers=admin).json()
    assert [h["version"] for h in page["history"]] == [2] and page["next_cursor"]
    page = client.get(
        f"{PROFILES}/default?limit=1&cursor={page['next_cursor']}", headers=admin
    ).json()
    assert [h["version"] for h in page["history"]] == [1] and page["next_cursor"] is None

    # a new profile starts at version 1; the list shows each profile's current version
    r3 = _put(client, "experiment-a", {"weights": {"freshness": 0.3}}, admin)
    assert r3.status_code == 202 and r3.json()["version"] == 1
    items = client.get(
        PROFILES, headers={**admin, "X-Consistency-Token": r3.json()["position"]}
    ).json()
    assert [(p["name"], p["version"]) for p in items["items"]] == [
        ("default", 2),
        ("experiment-a", 1),
    ]
    assert items["items"][1]["description"] == ""


def test_resolve_profile_caches_but_honours_a_token(
    client: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api.ranking, "CACHE_TTL_S", 3600.0)  # no expiry within the test
    c = _ctx(client)
    call = client.portal.call  # type: ignore[union-attr]
    assert call(resolve_profile, c, None).version == 0  # built-in, now cached
    # a write that bypasses this process's PUT (another API process, say)
    weights = validate_weights({"vector": 2.0})
    event = Event(
        "RankingProfileSet",
        "default",
        {
            "profile": "default",
            "version": 1,
            "weights": weights,
            "description": "",
            "set_by": None,
        },
    )
    token = call(c.publisher.publish, event).token()
    r = client.get(PROFILES, headers={**admin, "X-Consistency-Token": token})
    assert r.status_code == 200
    assert call(resolve_profile, c, "default").version == 0  # the cache, still fresh
    # the search route hands over its request: the token comes from its header
    scope = {
        "type": "http",
        "app": client.app,
        "headers": [(b"x-consistency-token", token.encode())],
    }
    fresh = call(resolve_profile, Request(scope), "default")
    assert fresh.version == 1 and fresh.weights["vector"] == 2.0
    assert call(resolve_profile, c, "default", token).version == 1
    assert call(resolve_profile, c, None).version == 1  # the cache was refreshed too
    # a token of another topic is not the profiles' business: no wait, no error
    assert call(resolve_profile, c, None, f"{SEARCHES.name}:0:99").version == 1
    # a profile set elsewhere after the cache was filled is still found by name
    other = Event(
        "RankingProfileSet",
        "new-one",
        {"profile": "new-one", "version": 1, "weights": weights, "description": "", "set_by": None},
    )
    token = call(c.publisher.publish, other).token()
    client.get(PROFILES, headers={**admin, "X-Consistency-Token": token})
    assert call(resolve_profile, c, "new-one").name == "new-one"
    for bad in ("nope", "Bad Name", ""):
        with pytest.raises(Problem) as info:
            call(resolve_profile, c, bad)
        assert info.value.status == 422 and info.value.field == "profile"
    with pytest.raises(Problem) as info:
        call(resolve_profile, c, None, "garbage")
    assert info.value.status == 400


def test_concurrent_version_loses_with_409(
    client: TestClient, admin: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _put(client, "default", {"weights": {"vector": 1.1}}, admin).json()["version"] == 1
    assert _put(client, "default", {"weights": {"vector": 1.2}}, admin).json()["version"] == 2
    # Make the next PUT believe version 1 is current, as a request racing the last
    # one would: it appends version 2 again, which the projector ignores.
    from projections import ranking as proj

    async def stale(conn: Any, name: str) -> Any:
        return await proj.stored_version(conn, name, 1)

    monkeypatch.setattr(api.ranking, "current_version", stale)
    _problem(_put(client, "default", {"weights": {"vector": 9.0}}, admin), 409, "name")
    monkeypatch.setattr(api.ranking, "current_version", proj.current_version)
    got = client.get(f"{PROFILES}/default", headers=admin).json()
    assert got["profile"]["version"] == 2 and got["profile"]["weights"]["vector"] == 1.2
    assert len(got["history"]) == 2


def test_bad_profile_input_is_named(client: TestClient, admin: dict[str, str]) -> None:
    def put(name: str, body: dict[str, Any]) -> Any:
        return _put(client, name, body, admin)

    _problem(put("default", {"weights": {"vector": 11}}), 422, "weights.vector")
    _problem(put("default", {"weights": {"vector": -0.1}}), 422, "weights.vector")
    _problem(put("default", {"weights": {"vector": "1"}}), 422, "weights.vector")
    _problem(put("default", {"weights": {"vector": True}}), 422, "weights.vector")
    _problem(put("default", {"weights": {"rrf_k": 0.5}}), 422, "weights.rrf_k")
    unknown = _problem(put("default", {"weights": {"colour": 1}}), 422, "weights.colour")
    assert "fulltext" in unknown["detail"] and "freshness" in unknown["detail"]
    _problem(put("default", {"weights": [1, 2]}), 422, "weights")
    _problem(put("default", {}), 422, "weights")
    _problem(put("default", {"weights": {}, "colour": 1}), 422, "colour")
    _problem(put("default", {"description": "x" * 501}), 422, "description")
    _problem(put("default", {"description": "a\x00b"}), 422, "description")
    _problem(put("Bad%20Name", {"weights": {"vector": 1}}), 422, "name")
    _problem(put("-leading", {"weights": {"vector": 1}}), 422, "name")
    _problem(put("x" * 65, {"weights": {"vector": 1}}), 422, "name")
    _problem(client.get(f"{PROFILES}/Upper", headers=admin), 422, "name")
    _problem(client.get(f"{PROFILES}/missing", headers=admin), 404, "name")
    _problem(client.get(f"{PROFILES}/default?cursor=zzz", headers=admin), 422, "cursor")
    _problem(client.get(f"{PROFILES}/default?limit=0", headers=admin), 422, "limit")
    # nothing was written
    assert client.get(f"{PROFILES}/default", headers=admin).json()["history"] == []


def _challenged(r: Any, status: int, error: str | None = None) -> None:
    """A 401/403 problem naming Authorization, with an RFC 6750 challenge."""
    _problem(r, status, "Authorization")
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer "), challenge
    if error:
        assert f'error="{error}"' in challenge, challenge


def test_admin_routes_need_an_admin_token(client: TestClient, admin: dict[str, str]) -> None:
    _, user = new_user(client)
    _, support = _with_role(client, admin, "support", "support")
    # the admin's own token narrowed to reading analytics: it reads, and changes nothing
    narrowed = password_login(client, ADMIN_EMAIL, ADMIN_PASSWORD, scope="analytics:read")
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json()["scope"] == "analytics:read"
    reader = bearer(narrowed.json())
    for path in (PROFILES, f"{PROFILES}/default", ANALYTICS):
        _challenged(client.get(path), 401)
        for bad in ("Bearer not-a-token", "Basic YWRtaW46c2VjcmV0", "Bearer mgw_nope"):
            _challenged(client.get(path, headers={"Authorization": bad}), 401)
        denied = client.get(path, headers=user)
        _challenged(denied, 403, "insufficient_scope")
        assert 'scope="analytics:read"' in denied.headers["WWW-Authenticate"]
        for allowed in (admin, support, reader):
            assert client.get(path, headers=allowed).status_code == 200
    change = {"weights": {"vector": 1}}
    _challenged(_put(client, "default", change), 401)
    _challenged(_put(client, "default", change, {"Authorization": "Bearer not-a-token"}), 401)
    for headers in (user, support, reader):  # reading analytics is not changing ranking
        denied = _put(client, "default", change, headers)
        _challenged(denied, 403, "insufficient_scope")
        assert 'scope="ranking:write"' in denied.headers["WWW-Authenticate"]
    ok = _put(client, "default", change, admin)
    assert ok.status_code == 202 and ok.json()["version"] == 1
    # clicks come from apps, not admins: signed in or not
    click = {"search_id": "s", "content_id": "c", "position": 1}
    assert client.post("/v1/search/clicks", json=click).status_code == 202
    assert client.post("/v1/search/clicks", json=click, headers=user).status_code == 202


def test_remote_clients_need_a_token_too(client: TestClient) -> None:
    # A client elsewhere: no loopback exemption. Refused before any database work, so
    # this second client (which does not run the app's lifespan) never touches the
    # first one's pools.
    remote = TestClient(client.app, client=("203.0.113.9", 40000))
    for path in (PROFILES, f"{PROFILES}/default", ANALYTICS):
        _challenged(remote.get(path), 401)
        _challenged(remote.get(path, headers={"Authorization": "Bearer not-a-token"}), 401)
    _challenged(remote.put(f"{PROFILES}/default", json={}), 401)


# -- search analytics ----------------------------------------------------------


def _search(
    sid: str, query: str, ids: list[str], count: int | None = None, at: datetime = T0
) -> dict[str, Any]:
    return {
        "search_id": sid,
        "query": query.upper(),
        "normalized_query": query,
        "filters": {"intent": "title", "region": "US"},
        "result_count": len(ids) if count is None else count,
        "result_ids": ids,
        "profile": "default",
        "profile_version": 0,
        "latency_ms": 12.5,
        "degraded": False,
        "at": at,
    }


SEARCHES_DAY = [
    _search("s1", "toy story", ["a", "b", "c"]),
    _search("s2", "toy story", ["a", "b", "c"]),
    _search("s3", "matrix", [f"m{i}" for i in range(12)], count=40),
    _search("s4", "zzzz", []),
    _search("s5", "zzzz", []),
    _search("s6", "qqq", []),
    _search("s1", "toy story", ["a", "b", "c"]),  # a repeat: counted once
    _search("s7", "toy story", ["a"], at=T0 + timedelta(days=1)),
]
CLICKS = [("s1", "a", 1), ("s1", "b", 2), ("s2", "a", 1), ("s3", "m10", 11), ("nope", "x", 3)]


async def _publish(c: AppContext, search: dict[str, Any]) -> Position | None:
    return await publish_search(c, **search)


def _report(
    client: TestClient, admin: dict[str, str], query: str = "", token: str | None = None
) -> dict[str, Any]:
    headers = {**admin, "X-Consistency-Token": token} if token else admin
    r = client.get(f"{ANALYTICS}{query}", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _clicked_by(client: TestClient, token: str) -> str | None:
    """The user id the SearchResultClicked event at ``token`` records."""
    pos = Position.parse(token)
    call = client.portal.call  # type: ignore[union-attr]
    [record] = call(_ctx(client).log.read, pos.topic, pos.partition, pos.offset, 1)
    event_type, payload = AvroCodec().decode(record.value)
    assert event_type == "SearchResultClicked"
    user: str | None = payload["user_id"]
    return user


def test_analytics_counts_searches_zero_results_and_clicks(
    client: TestClient, admin: dict[str, str]
) -> None:
    alice_id, alice = new_user(client, "alice")
    c = _ctx(client)
    call = client.portal.call  # type: ignore[union-attr]
    tokens = []
    for s in SEARCHES_DAY:
        pos = call(_publish, c, s)
        assert pos is not None
        tokens.append(pos.token())
    for sid, cid, position in CLICKS:
        r = client.post(
            "/v1/search/clicks",
            json={"search_id": sid, "content_id": cid, "position": position},
            headers=alice,
        )
        assert r.status_code == 202 and r.headers["X-Consistency-Token"].startswith(SEARCHES.name)
        assert _clicked_by(client, r.json()["position"]) == alice_id  # from the token
        tokens.append(r.json()["position"])
    for t in tokens:  # each token is one partition's: wait for every one
        _report(client, admin, token=t)

    day = _report(client, admin, f"?from={DAY}&to={DAY}")
    assert (day["from"], day["to"]) == ("2020-01-01", "2020-01-01")
    assert day["totals"] == {
        "searches": 6,
        "zero_result_searches": 3,
        "clicks": 4,
        "clicked_searches": 3,
        "ctr": 0.5,
    }
    assert [(q["query"], q["searches"]) for q in day["top_queries"]] == [
        ("toy story", 2),
        ("zzzz", 2),
        ("matrix", 1),
        ("qqq", 1),
    ]
    assert day["top_queries"][0] == {
        "query": "toy story",
        "searches": 2,
        "zero_result_searches": 0,
        "clicks": 3,
        "clicked_searches": 2,
        "ctr": 1.0,
    }
    assert day["top_queries"][2]["clicks"] == 1  # matrix: the click past the first page
    assert [(q["query"], q["zero_result_searches"]) for q in day["zero_result_queries"]] == [
        ("zzzz", 2),
        ("qqq", 1),
    ]
    assert day["ctr_by_position"] == [
        {"position": 1, "impressions": 3, "clicks": 2, "ctr": 0.6667},
        {"position": 2, "impressions": 3, "clicks": 1, "ctr": 0.3333},
        {"position": 3, "impressions": 3, "clicks": 0, "ctr": 0.0},
        *({"position": p, "impressions": 1, "clicks": 0, "ctr": 0.0} for p in range(4, 11)),
        {"position": 11, "impressions": 0, "clicks": 1, "ctr": None},
    ]
    top = _report(client, admin, f"?from={DAY}&to={DAY}&limit=1")
    assert [q["query"] for q in top["top_queries"]] == ["toy story"]
    assert [q["query"] for q in top["zero_result_queries"]] == ["zzzz"]

    two_days = _report(client, admin, f"?from={DAY}&to={DAY + timedelta(days=1)}")
    assert two_days["totals"]["searches"] == 7
    assert two_days["top_queries"][0]["searches"] == 3

    # the click on a search never seen counts today, by position only
    today = datetime.now(UTC).date()
    week = _report(client, admin)
    assert (week["from"], week["to"]) == ((today - timedelta(days=6)).isoformat(), str(today))
    assert week["totals"] == {
        "searches": 0,
        "zero_result_searches": 0,
        "clicks": 1,
        "clicked_searches": 0,
        "ctr": None,
    }
    assert week["ctr_by_position"] == [{"position": 3, "impressions": 0, "clicks": 1, "ctr": None}]
    assert week["top_queries"] == [] and week["zero_result_queries"] == []


def test_bad_analytics_input_is_named(client: TestClient, admin: dict[str, str]) -> None:
    def get(query: str) -> Any:
        return client.get(f"{ANALYTICS}{query}", headers=admin)

    _problem(get("?from=2020-13-01"), 422, "from")
    _problem(get("?from=yesterday"), 422, "from")
    _problem(get("?to=2020-1-1"), 422, "to")
    _problem(get("?from=2020-01-02&to=2020-01-01"), 422, "from")
    _problem(get("?from=2020-01-01&to=2021-01-01"), 422, "to")  # 367 days
    assert get("?from=2020-01-01&to=2020-12-31").status_code == 200  # 366
    _problem(get("?limit=101"), 422, "limit")
    click = {"search_id": "s", "content_id": "c", "position": 1}
    post = client.post
    _problem(post("/v1/search/clicks", json={**click, "position": 0}), 422, "position")
    _problem(post("/v1/search/clicks", json={**click, "position": 1.5}), 422, "position")
    _problem(post("/v1/search/clicks", json={**click, "position": "2"}), 422, "position")
    _problem(post("/v1/search/clicks", json={**click, "search_id": ""}), 422, "search_id")
    _problem(post("/v1/search/clicks", json={**click, "content_id": "a\x00"}), 422, "content_id")
    _problem(post("/v1/search/clicks", json={**click, "extra": 1}), 422, "extra")
    _problem(post("/v1/search/clicks", json={"search_id": "s"}), 422, "content_id")
    # the bearer token is optional, but one that is sent must be good
    for bad in ("Bearer a b", "Bearer not-a-token", "Basic YWxpY2U6c2VjcmV0"):
        r = post("/v1/search/clicks", json=click, headers={"Authorization": bad})
        _problem(r, 401, "Authorization")
        assert r.headers["WWW-Authenticate"].startswith("Bearer ")
    anonymous = post("/v1/search/clicks", json=click)
    assert (
        anonymous.status_code == 202 and _clicked_by(client, anonymous.json()["position"]) is None
    )
    # publish_search never raises (it runs after the response): bad input is logged
    c = _ctx(client)
    call = client.portal.call  # type: ignore[union-attr]
    assert call(_publish, c, _search("", "q", [])) is None
    with pytest.raises(ValueError):
        search_performed_event(**{**_search("s", "q", []), "result_count": -1})


# -- projections: redelivery and replay ---------------------------------------------


@pytest.fixture
async def elog(db_uri: str) -> AsyncIterator[EmbeddedLog]:
    log = await EmbeddedLog(db_uri).open()
    yield log
    await log.close()


def _click(sid: str, position: int, at: datetime = T0) -> Event:
    payload = {"search_id": sid, "content_id": "c", "position": position, "user_id": None, "at": at}
    return Event("SearchResultClicked", sid, payload, occurred_at=at)


async def _rebuild(stores: Stores, elog: EmbeddedLog, projector: Any, batch_size: int) -> str:
    await maintenance.clear(stores, projector)
    pipeline = ProjectionPipeline(projector, stores, elog, dead_letters=False, emit=False)
    await ProjectorLoop(pipeline, elog, batch_size=batch_size, linger_ms=0).catch_up()
    return await maintenance.checksum(stores, projector)


async def _records(elog: EmbeddedLog, topic: str) -> list[Any]:
    out: list[Any] = []
    for p in range(elog.partitions(topic)):
        out += await elog.read(topic, p, 0, 100000)
    return out


async def test_redelivery_and_replay_count_nothing_twice(elog: EmbeddedLog, stores: Stores) -> None:
    events = [search_performed_event(**s) for s in SEARCHES_DAY]
    # a click that reaches the log before its search (the search is appended after the
    # response): it stays a click on an unseen search, whatever the batch boundaries
    events.insert(0, _click("s6", 1))
    events += [_click(sid, pos) for sid, _, pos in CLICKS]
    await Publisher(elog).publish_many(events)
    projector = SearchAnalyticsProjector()
    pipeline = ProjectionPipeline(projector, stores, elog)
    records = await _records(elog, SEARCHES.name)

    first = await pipeline.process(records)
    original = await maintenance.checksum(stores, projector)
    again = await pipeline.process(records)  # a redelivered batch
    assert (first.applied, first.skipped) == (len(events), 0)
    assert (again.applied, again.skipped) == (0, len(events))
    assert await maintenance.checksum(stores, projector) == original
    async with stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT sum(searches), sum(clicks), sum(clicked_searches) FROM search_queries_daily"
        )
        assert await cur.fetchone() == (7, 4, 3)
        cur = await conn.execute("SELECT sum(impressions), sum(clicks) FROM search_position_daily")
        assert await cur.fetchone() == (3 + 3 + 10 + 1, 6)
        cur = await conn.execute("SELECT clicks FROM searches WHERE search_id = 's6'")
        assert await cur.fetchone() == (0,)

    for batch_size in (1, 3, 10000):  # wherever batch boundaries fall: the same state
        assert await _rebuild(stores, elog, projector, batch_size) == original


async def test_ranking_first_version_wins_on_replay(elog: EmbeddedLog, stores: Stores) -> None:
    def set_(version: int, vector: float) -> Event:
        weights = validate_weights({"vector": vector})
        payload = {
            "profile": "default",
            "version": version,
            "weights": weights,
            "description": f"v{version} vector {vector}",
            "set_by": None,
        }
        return Event("RankingProfileSet", "default", payload)

    await Publisher(elog).publish_many([set_(1, 1.5), set_(2, 2.0), set_(2, 3.0), set_(3, 0.5)])
    projector = RankingProjector()
    once = await _rebuild(stores, elog, projector, 10000)
    async with stores.pg.connection() as conn:
        profile = await current_profile(conn, "default")
        assert profile is not None and profile.version == 3
        cur = await conn.execute(
            "SELECT weights->>'vector' FROM ranking_profiles WHERE version = 2"
        )
        assert await cur.fetchone() == ("2.0",)  # the first version 2 in log order
        assert [v.profile.name for v in await list_profiles(conn)] == ["default"]
    assert await _rebuild(stores, elog, projector, 1) == once


def test_discovery_events_round_trip() -> None:
    codec = AvroCodec()
    ranking = {
        "profile": "default",
        "version": 1,
        "weights": dict(DEFAULT_WEIGHTS),
        "description": "",
        "set_by": None,
    }
    search = dict(search_performed_event(**SEARCHES_DAY[0]).payload)
    click = dict(_click("s1", 2).payload)
    samples = {
        "RankingProfileSet": ranking,
        "SearchPerformed": search,
        "SearchResultClicked": click,
    }
    for event_type, payload in samples.items():
        assert codec.decode(codec.encode(event_type, payload)) == (event_type, payload)
    assert search["filters"] == '{"intent":"title","region":"US"}'
