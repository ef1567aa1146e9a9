"""End to end through the HTTP API on the embedded log: command -> log -> projector -> query."""

from __future__ import annotations

from dataclasses import replace

from starlette.testclient import TestClient

from core.settings import Settings
from mgw.app import create_app
from projections.playback import continue_watching
from tests.helpers import play
from tests.identity_helpers import admin_headers, new_user


def _movie(**over: object) -> dict[str, object]:
    body: dict[str, object] = {
        "title": "Toy Story",
        "year": 1995,
        "kind": "movie",
        "runtime_min": 81,
        "genres": ["Animation", "Comedy"],
        "overview": "Woody and Buzz.",
        "external_ids": {"imdb": "tt0114709", "tmdb": 862},
    }
    body.update(over)
    return body


def test_content_round_trip_with_read_your_writes(
    client: TestClient, admin: dict[str, str]
) -> None:
    r = client.post("/v1/content", json=_movie(), headers=admin)
    assert r.status_code == 202
    token = r.json()["position"]
    assert r.headers["X-Consistency-Token"] == token
    cid = r.json()["content_id"]
    got = client.get(f"/v1/content/{cid}", headers={"X-Consistency-Token": token})
    assert got.status_code == 200
    doc = got.json()
    assert doc["id"] == cid and doc["title"] == "Toy Story" and doc["kind"] == "movie"
    assert doc["year"] == 1995 and doc["genres"] == ["Animation", "Comedy"]
    assert doc["external_ids"] == {"imdb": "tt0114709", "tmdb": "862"}
    # an upsert with the same id replaces the title's fields
    r2 = client.post(
        "/v1/content", json=_movie(content_id=cid, title="Toy Story (Director's)"), headers=admin
    )
    doc2 = client.get(
        f"/v1/content/{cid}", headers={"X-Consistency-Token": r2.json()["position"]}
    ).json()
    assert doc2["title"] == "Toy Story (Director's)"


def test_continue_watching_end_to_end(client: TestClient, admin: dict[str, str]) -> None:
    _, alice = new_user(client, "alice")
    _, bob = new_user(client, "bob")
    created = client.post("/v1/content", json=_movie(content_id="toy-story"), headers=admin).json()
    cid = created["content_id"]
    # the title is read from the catalog: wait for it, not only for the playback events
    seen = client.get(f"/v1/content/{cid}", headers={"X-Consistency-Token": created["position"]})
    assert seen.status_code == 200
    body = {
        "content_id": cid,
        "device_id": "tv",
        "kind": "start",
        "position_s": 0,
        "duration_s": 4860,
    }
    assert client.post("/v1/playback/events", json=body, headers=alice).status_code == 202
    r = client.post(
        "/v1/playback/events", headers=alice, json={**body, "kind": "progress", "position_s": 1215}
    )
    token = r.json()["position"]
    cw = client.get(
        "/v1/me/continue-watching", headers={**alice, "X-Consistency-Token": token}
    ).json()
    assert cw["next_cursor"] is None
    [item] = cw["items"]
    assert item["content_id"] == cid and item["title"] == "Toy Story"
    assert item["position_s"] == 1215 and item["duration_s"] == 4860
    assert item["progress"] == 0.25 and item["updated_at"]
    # another user sees nothing of alice's
    other = client.get("/v1/me/continue-watching", headers={**bob, "X-Consistency-Token": token})
    assert other.status_code == 200 and other.json()["items"] == []
    # finishing the title removes it
    r = client.post(
        "/v1/playback/events", headers=alice, json={**body, "kind": "stop", "position_s": 4800}
    )
    cw = client.get(
        "/v1/me/continue-watching", headers={**alice, "X-Consistency-Token": r.json()["position"]}
    ).json()
    assert cw["items"] == []


def _problem(r, status: int, field: str) -> None:  # type: ignore[no-untyped-def]
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["field"] == field and body["detail"]
    if status == 401:  # RFC 6750: a challenge says how to authenticate
        assert r.headers["WWW-Authenticate"].startswith("Bearer "), r.headers


def test_bad_input_is_named(client: TestClient, admin: dict[str, str]) -> None:
    def post_content(**over: object) -> object:
        return client.post("/v1/content", json=_movie(**over), headers=admin)

    _problem(post_content(year=1200), 422, "year")
    _problem(post_content(title=""), 422, "title")
    _problem(post_content(kind="podcast"), 422, "kind")
    _problem(post_content(external_ids={"imdb": "123"}), 422, "external_ids.imdb")
    _problem(post_content(colour="red"), 422, "colour")
    _problem(post_content(kind="episode"), 422, "series_id")
    _problem(
        client.post(
            "/v1/content",
            content=b"{not json",
            headers={**admin, "content-type": "application/json"},
        ),
        400,
        "body",
    )
    _problem(
        client.post(
            "/v1/content",
            content=b"x" * (1 << 20 + 1),
            headers={**admin, "content-type": "application/json"},
        ),
        413,
        "body",
    )
    # writing the catalog takes an admin: no token is 401, a user's token 403
    _, alice = new_user(client, "alice")
    _problem(client.post("/v1/content", json=_movie()), 401, "Authorization")
    denied = client.post("/v1/content", json=_movie(), headers=alice)
    _problem(denied, 403, "Authorization")
    assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
    assert 'scope="catalog:write"' in denied.headers["WWW-Authenticate"]
    play_body = {"content_id": "c", "device_id": "d", "kind": "progress", "position_s": 10}
    _problem(client.post("/v1/playback/events", json=play_body), 401, "Authorization")
    for bad in ("Bearer a b", "Bearer not-a-token", "Basic YWxpY2U6c2VjcmV0", "Bearer "):
        _problem(
            client.post("/v1/playback/events", json=play_body, headers={"Authorization": bad}),
            401,
            "Authorization",
        )
    _problem(
        client.post("/v1/playback/events", json={**play_body, "kind": "pause"}, headers=alice),
        422,
        "kind",
    )
    _problem(
        client.post("/v1/playback/events", json={**play_body, "position_s": -3}, headers=alice),
        422,
        "position_s",
    )
    _problem(
        client.post(
            "/v1/playback/events",
            json={**play_body, "position_s": 500, "duration_s": 100},
            headers=alice,
        ),
        422,
        "position_s",
    )
    _problem(client.get("/v1/me/continue-watching"), 401, "Authorization")
    _problem(
        client.get("/v1/me/continue-watching", headers={"Authorization": "Bearer not-a-token"}),
        401,
        "Authorization",
    )
    _problem(client.get("/v1/me/continue-watching?limit=0", headers=alice), 422, "limit")
    _problem(client.get("/v1/me/continue-watching?cursor=%%%", headers=alice), 422, "cursor")
    _problem(client.get("/v1/content/nope"), 404, "content_id")
    _problem(
        client.get("/v1/content/x", headers={"X-Consistency-Token": "garbage"}),
        400,
        "X-Consistency-Token",
    )
    _problem(
        client.get("/v1/content/x", headers={"X-Consistency-Token": "playback.events:0:1"}),
        400,
        "X-Consistency-Token",
    )


def test_token_the_projection_cannot_reach_answers_503(settings: Settings) -> None:
    # Sign the admin in while the projectors run (the identity projection makes the
    # account); the token stays good for the next app on the same data dir and database.
    with TestClient(create_app(settings)) as c:
        admin = admin_headers(c)
    fast = replace(settings, consistency_wait_s=0.3)
    with TestClient(create_app(fast, run_projectors=False)) as c:
        r = c.post("/v1/content", json=_movie(), headers=admin)
        assert r.status_code == 202
        got = c.get(
            f"/v1/content/{r.json()['content_id']}",
            headers={"X-Consistency-Token": r.json()["position"]},
        )
        _problem(got, 503, "X-Consistency-Token")
        assert got.headers["Retry-After"] == "1"
        ready = c.get("/ready").json()
        assert ready["projectors"]["catalog"]["lag"] == 1


def test_health_ready_metrics(client: TestClient, admin: dict[str, str]) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    r = client.post("/v1/content", json=_movie(), headers=admin)
    client.get(
        f"/v1/content/{r.json()['content_id']}",
        headers={"X-Consistency-Token": r.json()["position"]},
    )
    ready = client.get("/ready")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["log_backend"] == "embedded"
    assert {d["status"] for d in body["dependencies"].values()} == {"up"}
    assert body["projectors"]["catalog"] == {"lag": 0}
    text = client.get("/metrics").text
    assert 'mgw_events_appended_total{event_type="ContentUpserted",topic="catalog.content"}' in text
    assert 'mgw_records_applied_total{projector="catalog"}' in text
    assert "mgw_projector_batch_seconds_bucket" in text
    assert "mgw_projector_lag_records" in text


def test_ready_is_503_when_a_dependency_is_down(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    dead = replace(settings, redis_url=f"unix://{tmp_path}/no-redis-here.sock")
    with TestClient(create_app(dead)) as c:
        r = c.get("/ready")
        assert r.status_code == 503
        body = r.json()
        assert body["status"] == "unavailable"
        assert body["dependencies"]["redis"]["status"] == "down"
        assert body["dependencies"]["redis"]["error"]
        assert body["dependencies"]["postgres"]["status"] == "up"
        assert c.get("/health").status_code == 200  # liveness does not depend on Redis


def test_streamed_body_over_the_limit_is_413(client: TestClient, admin: dict[str, str]) -> None:
    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(20):
            yield b"x" * 65536  # 1.25 MiB in all, no Content-Length

    r = client.post(
        "/v1/content", content=chunks(), headers={**admin, "content-type": "application/json"}
    )
    _problem(r, 413, "body")


def test_review_findings_stay_fixed(client: TestClient, admin: dict[str, str]) -> None:
    _, alice = new_user(client, "alice")
    # NUL characters cannot be stored: refused up front, naming the field
    _problem(
        client.post("/v1/content", json=_movie(title="Bad\x00Title"), headers=admin), 422, "title"
    )
    _problem(
        client.post("/v1/content", json=_movie(genres=["Drama", "x\x00"]), headers=admin),
        422,
        "genres",
    )
    nul = {"content_id": "c\x00", "device_id": "d", "kind": "progress", "position_s": 10}
    _problem(client.post("/v1/playback/events", json=nul, headers=alice), 422, "content_id")
    # Avro ints are 32-bit
    big = _movie(kind="episode", series_id="s1", season=2**31)
    _problem(client.post("/v1/content", json=big, headers=admin), 422, "season")
    # a token naming a partition that does not exist can never be satisfied: 400, not 503
    _problem(
        client.get("/v1/content/x", headers={"X-Consistency-Token": "catalog.content:999:0"}),
        400,
        "X-Consistency-Token",
    )
    # two signed-in users each read their own continue-watching through the API
    users = {name: new_user(client, name)[1] for name in ("bob", "carol")}
    tokens = {}
    for name, content_id in (("bob", "c-bob"), ("carol", "c-carol")):
        r = client.post(
            "/v1/playback/events",
            headers=users[name],
            json={
                "content_id": content_id,
                "device_id": "tv",
                "kind": "progress",
                "position_s": 600,
                "duration_s": 6000,
            },
        )
        assert r.status_code == 202
        tokens[name] = r.headers["X-Consistency-Token"]
    for name, content_id in (("bob", "c-bob"), ("carol", "c-carol")):
        r = client.get(
            "/v1/me/continue-watching",
            headers={**users[name], "X-Consistency-Token": tokens[name]},
        )
        assert r.status_code == 200, r.text
        assert [i["content_id"] for i in r.json()["items"]] == [content_id]
    # user ids that once shared Redis keys ("bob" and "bob:items") stay apart. The API
    # only takes ids of real accounts now, so these are appended to the log directly
    # and read back through the projection.
    c = client.app.state.mgw  # type: ignore[attr-defined]
    call = client.portal.call  # type: ignore[union-attr]
    tokens = {}
    for user, content_id in (("bob", "c-bob"), ("bob:items", "c-items")):
        tokens[user] = call(c.publisher.publish, play(user, content_id, 600.0)).token()
    for user, content_id in (("bob", "c-bob"), ("bob:items", "c-items")):
        # the route waits for the playback projection to reach the token
        r = client.get(
            "/v1/me/continue-watching", headers={**alice, "X-Consistency-Token": tokens[user]}
        )
        assert r.status_code == 200, r.text
        items, _ = call(continue_watching, c.stores.redis, c.stores.pg, user)
        assert [i.content_id for i in items] == [content_id]
