"""Viewing profiles and parental controls, end to end through the HTTP API.

Profiles CRUD, the parental PIN, and a limited profile browsing a catalog with rated
and unrated titles: search, autocomplete, a title's page and the new-arrivals list all
honour the active profile's limit (``X-Profile-Id``). Real PostgreSQL, Redis and the
embedded log; the search indexer runs without embeddings to keep indexing quick.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from domain.catalog.webhooks import sign
from mgw.app import create_app
from tests.identity_helpers import PASSWORD, admin_headers, new_user

SECRET = "profiles-tests"


def _settings(settings: Settings, **identity: Any) -> Settings:
    return replace(
        settings,
        embeddings="none",
        webhook_secrets=(("netflix", SECRET),),
        identity=replace(settings.identity, **identity),
    )


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return _settings(settings)


def _problem(r: httpx.Response, status: int, field: str | None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body.get("field") == field, body
    return body


def _eventually(get: Callable[[], httpx.Response], ok: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        r = get()
        if r.status_code == 200 and ok(r.json()):
            return r.json()
        assert time.monotonic() < deadline, r.text
        time.sleep(0.1)


def _create(c: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = c.post("/v1/me/profiles", json=body, headers=headers)
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == f"/v1/me/profiles/{r.json()['id']}"
    created: dict[str, Any] = r.json()
    return created


def _set_pin(c: TestClient, headers: dict[str, str], pin: str, **proof: str) -> httpx.Response:
    return c.put("/v1/me/parental-pin", json={"pin": pin, **proof}, headers=headers)


def _controls(
    c: TestClient, headers: dict[str, str], profile_id: str, max_rating: str | None, pin: str
) -> httpx.Response:
    return c.put(
        f"/v1/me/profiles/{profile_id}/parental-controls",
        json={"max_rating": max_rating, "pin": pin},
        headers=headers,
    )


# -- profiles ------------------------------------------------------------------------------


def test_profiles_crud(client: TestClient) -> None:
    _, me = new_user(client, "carol")
    _problem(client.get("/v1/me/profiles"), 401, "Authorization")

    listed = client.get("/v1/me/profiles", headers=me).json()
    assert listed["max"] == 8 and listed["pin_set"] is False
    [default] = listed["items"]
    assert default["default"] is True and default["max_rating"] is None
    assert default["name"] == "Carol" and default["kids"] is False

    kids = _create(client, me, name="  Kids  ", kids=True)
    # a kids profile without a limit of its own gets TV-Y7, no PIN needed to create it
    assert kids["name"] == "Kids" and kids["kids"] is True and kids["max_rating"] == "TV-Y7"
    assert kids["default"] is False
    teen = _create(client, me, name="Teen", max_rating="pg13")
    assert teen["max_rating"] == "PG-13" and teen["kids"] is False
    tot = _create(client, me, name="Tot", kids=True, max_rating="tv-y")
    assert tot["max_rating"] == "TV-Y"
    got = client.get(f"/v1/me/profiles/{teen['id']}", headers=me)
    assert got.status_code == 200 and got.json() == teen

    _problem(client.post("/v1/me/profiles", json={"name": "X", "max_rating": "XXX"},
                         headers=me), 422, "max_rating")  # fmt: skip
    _problem(client.post("/v1/me/profiles", json={"name": ""}, headers=me), 422, "name")
    _problem(client.post("/v1/me/profiles", json={"name": "a\x00b"}, headers=me), 422, "name")
    _problem(client.post("/v1/me/profiles", json={"name": "X", "colour": "red"}, headers=me),
             422, "colour")  # fmt: skip

    renamed = client.patch(f"/v1/me/profiles/{teen['id']}", json={"name": "Teens"}, headers=me)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["name"] == "Teens" and renamed.json()["max_rating"] == "PG-13"
    # the limit is not a rename: it changes only with the PIN
    _problem(
        client.patch(f"/v1/me/profiles/{teen['id']}", json={"name": "T", "max_rating": None},
                     headers=me),
        422, "max_rating",
    )  # fmt: skip

    _problem(client.delete(f"/v1/me/profiles/{default['id']}", headers=me), 409, "profile_id")
    assert client.delete(f"/v1/me/profiles/{tot['id']}", headers=me).status_code == 204
    _problem(client.get(f"/v1/me/profiles/{tot['id']}", headers=me), 404, "profile_id")
    _problem(client.delete(f"/v1/me/profiles/{tot['id']}", headers=me), 404, "profile_id")
    names = [p["name"] for p in client.get("/v1/me/profiles", headers=me).json()["items"]]
    assert names == ["Carol", "Kids", "Teens"]

    # at most 8 profiles: the projector decides, the API answers 409
    for i in range(5):
        _create(client, me, name=f"Extra {i}")
    full = client.post("/v1/me/profiles", json={"name": "Ninth"}, headers=me)
    assert _problem(full, 409, "profiles")["detail"].startswith("an account has at most 8")
    assert len(client.get("/v1/me/profiles", headers=me).json()["items"]) == 8


def test_another_accounts_profile_is_not_found(client: TestClient) -> None:
    _, alice = new_user(client, "alice")
    _, bob = new_user(client, "bob")
    mine = _create(client, alice, name="Kids", kids=True)
    [default] = [
        p for p in client.get("/v1/me/profiles", headers=alice).json()["items"] if p["default"]
    ]
    assert _set_pin(client, bob, "4321", password=PASSWORD).status_code == 204
    for pid in (mine["id"], default["id"], "no-such-profile"):
        base = f"/v1/me/profiles/{pid}"
        _problem(client.get(base, headers=bob), 404, "profile_id")
        _problem(client.patch(base, json={"name": "Mine now"}, headers=bob), 404, "profile_id")
        _problem(client.delete(base, headers=bob), 404, "profile_id")
        _problem(_controls(client, bob, pid, None, "4321"), 404, "profile_id")
        # acting as someone else's profile is refused the same way
        as_it = {**bob, "X-Profile-Id": pid}
        _problem(client.get("/v1/search", params={"q": "x"}, headers=as_it), 404, "X-Profile-Id")
        _problem(client.get("/v1/autocomplete", params={"q": "x"}, headers=as_it), 404,
                 "X-Profile-Id")  # fmt: skip
        _problem(client.get("/v1/content/anything", headers=as_it), 404, "X-Profile-Id")
        _problem(client.get("/v1/catalog/new", headers=as_it), 404, "X-Profile-Id")
    # nothing of alice's changed or leaked
    after = client.get(f"/v1/me/profiles/{mine['id']}", headers=alice).json()
    assert after == mine
    bobs = client.get("/v1/me/profiles", headers=bob).json()["items"]
    assert [p["name"] for p in bobs] == ["Bob"]
    # a profile header without credentials cannot be honoured: 401, never silently ignored
    _problem(client.get("/v1/search", params={"q": "x"}, headers={"X-Profile-Id": mine["id"]}),
             401, "X-Profile-Id")  # fmt: skip


def test_pin_flow(client: TestClient) -> None:
    _, me = new_user(client, "dora")
    kids = _create(client, me, name="Kids", kids=True)
    refused = _problem(_controls(client, me, kids["id"], "R", "1234"), 403, "pin")
    assert "no parental PIN" in refused["detail"]

    # the first PIN is confirmed with the account password
    _problem(_set_pin(client, me, "1234"), 403, "password")
    _problem(_set_pin(client, me, "1234", password="not the password at all"), 403, "password")
    for bad in ("123", "123456789", "12a4", " 1234"):
        _problem(_set_pin(client, me, bad, password=PASSWORD), 422, "pin")
    _problem(
        client.put("/v1/me/parental-pin", json={"pin": 1234, "password": PASSWORD}, headers=me),
        422, "pin",
    )  # fmt: skip
    assert _set_pin(client, me, "1234", password=PASSWORD).status_code == 204
    assert client.get("/v1/me/profiles", headers=me).json()["pin_set"] is True

    # a wrong PIN changes nothing
    _problem(_controls(client, me, kids["id"], "R", "9999"), 403, "pin")
    assert client.get(f"/v1/me/profiles/{kids['id']}", headers=me).json()["max_rating"] == "TV-Y7"
    _problem(_controls(client, me, kids["id"], "X-RATED", "1234"), 422, "max_rating")
    _problem(
        client.put(f"/v1/me/profiles/{kids['id']}/parental-controls", json={"pin": "1234"},
                   headers=me),
        422, "max_rating",
    )  # fmt: skip
    changed = _controls(client, me, kids["id"], "tv-pg", "1234")
    assert changed.status_code == 200, changed.text
    assert changed.json()["max_rating"] == "TV-PG"
    lifted = _controls(client, me, kids["id"], None, "1234")
    assert lifted.status_code == 200 and lifted.json()["max_rating"] is None

    # changing the PIN needs the current one (the password no longer does)
    _problem(_set_pin(client, me, "5678", password=PASSWORD), 403, "current_pin")
    _problem(_set_pin(client, me, "5678", current_pin="0000"), 403, "current_pin")
    assert _set_pin(client, me, "5678", current_pin="1234").status_code == 204
    _problem(_controls(client, me, kids["id"], "G", "1234"), 403, "pin")
    assert _controls(client, me, kids["id"], "G", "5678").json()["max_rating"] == "G"


# -- a limited profile browsing the catalog ------------------------------------------------


TITLES = {
    "tots": ("Zorblax Tots", "series", "TV-Y"),
    "meadow": ("Zorblax Meadow", "movie", "g"),
    "carnage": ("Zorblax Carnage", "movie", "R"),
    "mystery": ("Zorblax Mystery", "movie", None),
}


def _post_titles(c: TestClient) -> dict[str, str]:
    admin = admin_headers(c)
    bad = c.post("/v1/content", json={"title": "Bad", "rating": "X"}, headers=admin)
    _problem(bad, 422, "rating")
    ids: dict[str, str] = {}
    token = ""
    for key, (title, kind, rating) in TITLES.items():
        body: dict[str, Any] = {"content_id": f"zb-{key}", "title": title, "kind": kind,
                                "year": 2001, "genres": ["Family"]}  # fmt: skip
        if rating is not None:
            body["rating"] = rating
        if key == "meadow":
            body["external_ids"] = {"imdb": "tt7000001"}
        r = c.post("/v1/content", json=body, headers=admin)
        assert r.status_code == 202, r.text
        ids[key] = r.json()["content_id"]
        token = r.json()["position"]
    got = c.get(f"/v1/content/{ids['meadow']}", headers={"X-Consistency-Token": token})
    assert got.status_code == 200 and got.json()["rating"] == "G"  # canonical spelling
    _eventually(
        lambda: c.get("/v1/search/status"),
        lambda s: s["caught_up"] and s["documents"] >= len(TITLES),
    )
    return ids


def _found(c: TestClient, headers: dict[str, str], **params: Any) -> set[str]:
    r = c.get("/v1/search", params={"q": "zorblax", **params}, headers=headers)
    assert r.status_code == 200, r.text
    return {i["id"] for i in r.json()["items"]}


def _browsed(c: TestClient, headers: dict[str, str]) -> set[str]:
    r = c.get("/v1/search", headers=headers)
    assert r.status_code == 200, r.text
    return {i["id"] for i in r.json()["items"]}


def _as(headers: dict[str, str], profile: dict[str, Any]) -> dict[str, str]:
    return {**headers, "X-Profile-Id": profile["id"]}


def test_limited_profiles_see_only_what_their_limit_allows(client: TestClient) -> None:
    ids = _post_titles(client)
    everything = set(ids.values())
    _, parent = new_user(client, "parent")
    kids = _create(client, parent, name="Kids", kids=True)  # TV-Y7
    family = _create(client, parent, name="Family", max_rating="PG")
    kid, fam = _as(parent, kids), _as(parent, family)

    # anonymous and the default profile: no limit
    assert _found(client, {}) == everything
    assert _found(client, parent) == everything
    assert _browsed(client, parent) == everything
    # PG: the G film and the TV-Y series; neither the R film nor the unrated one
    assert _found(client, fam) == {ids["tots"], ids["meadow"]}
    assert _browsed(client, fam) == {ids["tots"], ids["meadow"]}
    # TV-Y7: only the TV-Y series
    assert _found(client, kid) == {ids["tots"]}
    body = client.get("/v1/search", params={"q": "zorblax"}, headers=kid).json()
    assert body["filters"]["max_rating"] == "TV-Y7"
    # an explicit max_rating cannot lift the profile's limit; a stricter one applies
    assert _found(client, kid, max_rating="NC-17") == {ids["tots"]}
    assert _found(client, fam, max_rating="tv-y") == {ids["tots"]}
    assert _found(client, parent, max_rating="G") == {ids["tots"], ids["meadow"]}
    assert _found(client, {}, max_rating="PG-13") == {ids["tots"], ids["meadow"]}
    # NC-17 is the top of the ladder, where unrated titles sit
    assert _found(client, {}, max_rating="NC-17") == everything
    _problem(client.get("/v1/search", params={"q": "zorblax", "max_rating": "X"}), 422,
             "max_rating")  # fmt: skip

    # a title's page: 403 above the limit, naming the profile header
    blocked = _problem(client.get(f"/v1/content/{ids['carnage']}", headers=kid), 403,
                       "X-Profile-Id")  # fmt: skip
    assert "blocked by parental controls" in blocked["detail"]
    _problem(client.get(f"/v1/content/{ids['mystery']}", headers=fam), 403, "X-Profile-Id")
    _problem(client.get(f"/v1/content/{ids['carnage']}/availability", headers=fam), 403,
             "X-Profile-Id")  # fmt: skip
    ok = client.get(f"/v1/content/{ids['meadow']}", headers=fam)
    assert ok.status_code == 200 and ok.json()["rating"] == "G"
    assert client.get(f"/v1/content/{ids['tots']}", headers=kid).status_code == 200
    r_film = client.get(f"/v1/content/{ids['carnage']}", headers=parent)
    assert r_film.status_code == 200 and r_film.json()["rating"] == "R"
    assert client.get(f"/v1/content/{ids['mystery']}").json()["rating"] is None

    # autocomplete does not suggest what the profile may not open
    def titles(h: dict[str, str]) -> set[str]:
        r = client.get("/v1/autocomplete", params={"q": "zorb"}, headers=h)
        assert r.status_code == 200, r.text
        return {i["id"] for i in r.json()["items"] if i["type"] == "title"}

    _eventually(
        lambda: client.get("/v1/autocomplete", params={"q": "zorb"}),
        lambda b: {i.get("id") for i in b["items"]} >= everything,
    )
    assert titles(parent) == everything
    assert titles(fam) == {ids["tots"], ids["meadow"]}
    assert titles(kid) == {ids["tots"]}

    # new arrivals: a Netflix record joins the G film (same IMDb id) and brings an
    # unrated title of its own; the PG profile sees the first only
    feed = {"titles": [_netflix(91000001, "Zorblax Meadow", "tt7000001"),
                       _netflix(91000002, "Zorblax Unseen", None)]}  # fmt: skip
    _deliver(client, feed)
    arrivals = _eventually(
        lambda: client.get("/v1/catalog/new?region=US&days=30", headers=parent),
        lambda b: len(b["items"]) == 2,
    )
    arrived = {i["content_id"] for i in arrivals["items"]}
    assert ids["meadow"] in arrived
    [unseen] = arrived - {ids["meadow"]}
    limited = client.get("/v1/catalog/new?region=US&days=30", headers=fam).json()
    assert [i["content_id"] for i in limited["items"]] == [ids["meadow"]]
    assert client.get("/v1/catalog/new?region=US&days=30", headers=kid).json()["items"] == []

    # lifting the limit (with the PIN) applies at once
    assert _set_pin(client, parent, "2468", password=PASSWORD).status_code == 204
    assert _controls(client, parent, family["id"], None, "2468").status_code == 200
    _eventually(lambda: client.get("/v1/search/status"), lambda s: s["caught_up"])
    assert _found(client, fam) == everything | {unseen}
    assert client.get(f"/v1/content/{ids['carnage']}", headers=fam).status_code == 200


def test_unrated_titles_can_be_allowed(settings: Settings) -> None:
    with TestClient(create_app(_settings(settings, unrated_as="allowed"))) as c:
        ids = _post_titles(c)
        _, parent = new_user(c, "relaxed")
        family = _as(parent, _create(c, parent, name="Family", max_rating="PG"))
        kids = _as(parent, _create(c, parent, name="Kids", kids=True))
        assert _found(c, family) == {ids["tots"], ids["meadow"], ids["mystery"]}
        assert _found(c, kids) == {ids["tots"], ids["mystery"]}
        assert c.get(f"/v1/content/{ids['mystery']}", headers=kids).status_code == 200
        _problem(c.get(f"/v1/content/{ids['carnage']}", headers=family), 403, "X-Profile-Id")


def _netflix(nid: int, title: str, imdb: str | None) -> dict[str, Any]:
    start = (date.today() - timedelta(days=1)).isoformat()
    t: dict[str, Any] = {
        "netflixId": nid, "type": "movie", "title": title, "releaseYear": 2001,
        "runtimeMinutes": 90, "genres": ["Family"],
        "availability": [{"country": "US", "plan": "standard", "maxQuality": "HD",
                          "startDate": start}],
        "links": {"web": f"https://www.netflix.com/title/{nid}", "app": f"nflx://title/{nid}"},
    }  # fmt: skip
    if imdb:
        t["imdbId"] = imdb
    return t


def _deliver(c: TestClient, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()
    ts = int(time.time())
    r = c.post(
        "/v1/webhooks/netflix",
        content=raw,
        headers={
            "content-type": "application/json",
            "X-MGW-Timestamp": str(ts),
            "X-MGW-Signature": sign(SECRET, ts, raw),
            "X-MGW-Delivery": uuid.uuid4().hex,
        },
    )
    assert r.status_code in (200, 202), r.text


def test_pin_guesses_meet_the_rate_limit(settings: Settings) -> None:
    tight = _settings(settings, rate_limits="pin=3/900,login=100/60,register=100/60")
    with TestClient(create_app(tight)) as c:
        _, me = new_user(c, "eve")
        kids = _create(c, me, name="Kids", kids=True)
        assert _set_pin(c, me, "1357", password=PASSWORD).status_code == 204  # 1 of 3
        _problem(_controls(c, me, kids["id"], "R", "0000"), 403, "pin")
        _problem(_controls(c, me, kids["id"], "R", "1111"), 403, "pin")
        # the right PIN does not get through while the account is limited
        limited = _controls(c, me, kids["id"], "R", "1357")
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["Retry-After"]) > 0
        assert c.get(f"/v1/me/profiles/{kids['id']}", headers=me).json()["max_rating"] == "TV-Y7"
