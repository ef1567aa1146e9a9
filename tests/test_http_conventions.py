"""HTTP conventions a client relies on: conditional GETs with ETag on catalog reads,
Cache-Control that keeps personal answers private, and CORS for configured web origins."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from api.http_cache import matches
from core.settings import Settings
from tests.test_api import _movie


def test_if_none_match_follows_rfc_9110() -> None:
    assert matches('"abc"', '"abc"')
    assert matches('W/"abc", "x"', '"abc"')
    assert matches("*", '"abc"')
    assert not matches('"abd"', '"abc"')
    assert not matches("", '"abc"')


def test_a_title_read_is_conditional_and_public_only_when_anonymous(
    client: TestClient, admin: dict[str, str]
) -> None:
    created = client.post("/v1/content", json=_movie(content_id="etag-toy"), headers=admin)
    assert created.status_code == 202, created.text
    cid = created.json()["content_id"]
    token = {"X-Consistency-Token": created.json()["position"]}
    first = client.get(f"/v1/content/{cid}", headers=token)
    assert first.status_code == 200, first.text
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "public, max-age=60"
    assert "X-Profile-Id" in first.headers["Vary"]
    again = client.get(f"/v1/content/{cid}", headers={"If-None-Match": etag})
    assert (again.status_code, again.content) == (304, b"")
    assert again.headers["ETag"] == etag
    # a change to the title is a new body, so a new ETag: the old one no longer matches
    changed = client.post(
        "/v1/content", json=_movie(content_id="etag-toy", title="Toy Story (4K)"), headers=admin
    )
    fresh = client.get(
        f"/v1/content/{cid}",
        headers={"If-None-Match": etag, "X-Consistency-Token": changed.json()["position"]},
    )
    assert fresh.status_code == 200 and fresh.json()["title"] == "Toy Story (4K)"
    assert fresh.headers["ETag"] != etag
    signed_in = client.get(f"/v1/content/{cid}", headers=admin)
    assert signed_in.headers["Cache-Control"] == "private, max-age=60"
    missing = client.get("/v1/content/no-such-title")
    assert missing.status_code == 404 and "ETag" not in missing.headers


def test_catalog_lists_are_conditional(client: TestClient) -> None:
    first = client.get("/v1/catalog/new?region=US&days=30")
    assert first.status_code == 200, first.text
    again = client.get("/v1/catalog/new?region=US&days=30",
                       headers={"If-None-Match": first.headers["ETag"]})  # fmt: skip
    assert again.status_code == 304


@pytest.fixture
def cors_client(app_settings: Settings) -> Iterator[TestClient]:
    from mgw.app import create_app

    settings = replace(app_settings, cors_origins=("https://app.example.com",))
    with TestClient(create_app(settings, run_projectors=False)) as c:
        yield c


def test_cors_answers_configured_origins_only(cors_client: TestClient) -> None:
    pre = cors_client.options(
        "/v1/me/watchlist",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
        },
    )
    assert pre.status_code == 200, pre.text
    assert pre.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "POST" in pre.headers["access-control-allow-methods"]
    r = cors_client.get("/v1/catalog/new?region=US", headers={"Origin": "https://app.example.com"})
    assert r.headers["access-control-allow-origin"] == "https://app.example.com"
    assert "X-Consistency-Token" in r.headers["access-control-expose-headers"]
    other = cors_client.get("/v1/catalog/new?region=US", headers={"Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in other.headers
    refused = cors_client.options(
        "/v1/me/watchlist",
        headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status_code == 400


def test_without_configured_origins_there_is_no_cors(client: TestClient) -> None:
    r = client.get("/v1/catalog/new?region=US", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in r.headers


def test_a_moved_route_answers_at_its_old_path_with_deprecation_and_sunset(
    client: TestClient, admin: dict[str, str]
) -> None:
    from email.utils import parsedate_to_datetime

    new = client.get("/v1/admin/dead-letters?state=all", headers=admin)
    old = client.get("/v1/admin/dlq?state=all", headers=admin)
    assert new.status_code == old.status_code == 200
    assert old.json() == new.json()
    assert "Deprecation" not in new.headers
    assert old.headers["Deprecation"] == "@1796428800"  # 2026-12-05T00:00:00Z
    assert parsedate_to_datetime(old.headers["Sunset"]).isoformat() == "2027-06-30T00:00:00+00:00"
    assert old.headers["Link"] == '</v1/admin/dead-letters>; rel="successor-version"'
    # errors at the old path say it too, and the successor link keeps the path's id
    missing = client.get("/v1/admin/dlq/nope%2F1", headers=admin)
    assert missing.status_code == 404
    assert missing.headers["Link"] == '</v1/admin/dead-letters/nope%2F1>; rel="successor-version"'

    doc = client.get("/openapi.json").json()
    old_op, new_op = (
        doc["paths"]["/v1/admin/dlq"]["get"],
        doc["paths"]["/v1/admin/dead-letters"]["get"],
    )
    assert old_op["deprecated"] is True and "deprecated" not in new_op
    assert {"Deprecation", "Sunset", "Link"} <= set(old_op["responses"]["200"]["headers"])
    assert "use /v1/admin/dead-letters" in old_op["description"]
