"""``services=mine`` on search, end to end through the API: offers delivered by the
Netflix and Hulu webhooks, a user's services set with ``PUT /v1/me/services``, the real
indexer (without embeddings: full-text and trigram retrieval only) on real PostgreSQL,
Redis and the embedded log."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from tests.conftest import _TEMPLATE, TEST_IDENTITY, Services
from tests.identity_helpers import new_user
from tests.test_search import SECRET, _deliver, _hulu, _nf


@pytest.fixture(scope="module")
def app(services: Services, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from mgw.app import create_app

    name = f"search_services_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("search_services") / "data",
        database_url=services.db_uri(name),
        redis_url=f"unix://{services.redis_socket}?db=13",
        batch_linger_ms=0,
        embeddings="none",
        webhook_secrets=(("netflix", SECRET), ("hulu", SECRET)),
        identity=TEST_IDENTITY,
    )
    with TestClient(create_app(settings)) as c:
        # Toy Story and Jumanji on Netflix (US), Heat on Hulu (US, with ads)
        _deliver(c, "netflix", {"titles": [
            _nf(1, "Toy Story", 1995, "tt0114709"), _nf(3, "Jumanji", 1995, "tt0113497"),
        ]})  # fmt: skip
        _deliver(
            c, "hulu", _hulu("5d0e1f2a-3b4c-4d5e-8f6a-7b8c9d0e1f2a", "Heat", 1995, "tt0113277")
        )
        _wait_indexed(c, {"toy story": "Toy Story", "jumanji": "Jumanji", "heat": "Heat"})
        yield c


def _wait_indexed(c: TestClient, found: dict[str, str], timeout: float = 120) -> None:
    """Until the index has caught up and each query finds its title."""
    deadline = time.monotonic() + timeout
    while True:
        s = c.get("/v1/search/status").json()
        if s["caught_up"] and all(
            want in titles(c.get("/v1/search", params={"q": q}).json()) for q, want in found.items()
        ):
            return
        assert time.monotonic() < deadline, s
        time.sleep(0.2)


def titles(body: dict[str, Any]) -> list[str]:
    return [i["title"] for i in body["items"]]


def _search(c: TestClient, headers: dict[str, str] | None = None, **params: Any) -> Any:
    r = c.get("/v1/search", params=params, headers=headers or {})
    assert r.status_code == 200, r.text
    return r.json()


def _problem(r: Any, status: int, field: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["field"] == field, body
    return body


def _set_services(c: TestClient, headers: dict[str, str], value: dict[str, Any]) -> dict[str, str]:
    """Set the services; the headers to search with, carrying the write's consistency token
    (so the search reads the services just set)."""
    r = c.put("/v1/me/services", json=value, headers=headers)
    assert r.status_code in (200, 202), r.text
    return {**headers, "X-Consistency-Token": r.headers["X-Consistency-Token"]}


@pytest.fixture(scope="module")
def netflix_user(app: TestClient) -> dict[str, str]:
    _, headers = new_user(app, "netflixer")
    return _set_services(app, headers, {"region": "US", "platforms": ["netflix"]})


def test_mine_keeps_only_titles_on_my_services(
    app: TestClient, netflix_user: dict[str, str]
) -> None:
    body = _search(app, netflix_user, q="toy story", services="mine")
    assert titles(body)[0] == "Toy Story"
    assert body["services"] == "mine"
    assert body["filters"]["platforms"] == ["netflix"]
    assert body["filters"]["region"] == "US"
    # Heat streams on Hulu only: found without services=mine, not with it
    assert "Heat" in titles(_search(app, netflix_user, q="heat"))
    assert "Heat" not in titles(_search(app, netflix_user, q="heat", services="mine"))
    # services=any (the default, spelled out) changes nothing
    assert "Heat" in titles(_search(app, netflix_user, q="heat", services="any"))
    # browsing (no query) under services=mine lists Netflix's titles and not Hulu's
    browsed = titles(_search(app, netflix_user, services="mine", limit=50))
    assert {"Toy Story", "Jumanji"} <= set(browsed)
    assert "Heat" not in browsed


def test_more_services_and_offer_types(app: TestClient) -> None:
    _, headers = new_user(app, "both")
    both = _set_services(app, headers, {"region": "US", "platforms": ["netflix", "hulu"]})
    assert "Heat" in titles(_search(app, both, q="heat", services="mine"))
    assert "Toy Story" in titles(_search(app, both, q="toy story", services="mine"))
    # the services' offer types restrict too: Heat is on Hulu with ads, not to rent
    subs = _set_services(
        app, headers, {"region": "US", "platforms": ["hulu"], "offer_types": ["rent"]}
    )
    assert "Heat" not in titles(_search(app, subs, q="heat", services="mine"))
    ads = _set_services(
        app, headers, {"region": "US", "platforms": ["hulu"], "offer_types": ["ads"]}
    )
    assert "Heat" in titles(_search(app, ads, q="heat", services="mine"))


def test_explicit_filters_within_my_services(app: TestClient, netflix_user: dict[str, str]) -> None:
    # an explicit region replaces the stored one: nothing of ours streams in GB
    assert "Toy Story" not in titles(
        _search(app, netflix_user, q="toy story", services="mine", region="GB")
    )
    body = _search(app, netflix_user, q="toy story", services="mine", platform="netflix")
    assert "Toy Story" in titles(body)
    r = app.get(
        "/v1/search",
        params={"q": "heat", "services": "mine", "platform": "hulu"},
        headers=netflix_user,
    )
    assert "not one of your services" in _problem(r, 422, "platform")["detail"]


def test_mine_needs_a_signed_in_user_with_services(
    app: TestClient, netflix_user: dict[str, str]
) -> None:
    r = app.get("/v1/search", params={"q": "toy story", "services": "mine"})
    _problem(r, 401, "services")
    assert r.headers["WWW-Authenticate"].startswith("Bearer")

    _, fresh = new_user(app, "noservices")
    r = app.get("/v1/search", params={"q": "toy story", "services": "mine"}, headers=fresh)
    body = _problem(r, 409, "services")
    assert body["detail"] == "set your services first: PUT /v1/me/services"

    r = app.get("/v1/search", params={"q": "toy story", "services": "bogus"}, headers=netflix_user)
    _problem(r, 422, "services")
    r = app.get("/v1/search", params=[("services", "mine"), ("services", "any")])
    _problem(r, 422, "services")
