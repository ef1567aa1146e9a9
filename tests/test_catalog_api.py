"""The catalog through the HTTP API: signed webhooks in, resolved content with
availability out, new arrivals and leaving-soon lists with cursors."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from domain.catalog.webhooks import sign
from projections.resolution import new_cluster_id

SECRET = "s3cret-for-tests"
NUL = "a\x00"


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return replace(settings, webhook_secrets=(("netflix", SECRET), ("hulu", SECRET)))


def day(offset: int) -> str:
    return (date.today() + timedelta(days=offset)).isoformat()


def netflix_title(nid: int, title: str, year: int, **over: Any) -> dict[str, Any]:
    t: dict[str, Any] = {
        "netflixId": nid,
        "type": "movie",
        "title": title,
        "releaseYear": year,
        "runtimeMinutes": 120,
        "genres": ["Dramas"],
        "synopsis": f"{title}, the synopsis.",
        "availability": [
            {"country": "US", "plan": "standard", "maxQuality": "HD", "startDate": day(-2)}
        ],
        "links": {
            "web": f"https://www.netflix.com/title/{nid}",
            "app": f"nflx://title/{nid}",
        },
    }
    t.update(over)
    return t


def deliver(
    client: TestClient,
    titles: list[dict[str, Any]] | bytes,
    *,
    delivery: str,
    platform: str = "netflix",
    secret: str = SECRET,
    at: int | None = None,
) -> httpx.Response:
    body = titles if isinstance(titles, bytes) else json.dumps({"titles": titles}).encode()
    ts = int(time.time()) if at is None else at
    return client.post(
        f"/v1/webhooks/{platform}",
        content=body,
        headers={
            "content-type": "application/json",
            "X-MGW-Timestamp": str(ts),
            "X-MGW-Signature": sign(secret, ts, body),
            "X-MGW-Delivery": delivery,
        },
    )


def eventually(get: Callable[[], httpx.Response], ok: Callable[[Any], bool]) -> Any:
    deadline = time.monotonic() + 15
    while True:
        r = get()
        if r.status_code == 200 and ok(r.json()):
            return r.json()
        assert time.monotonic() < deadline, r.text
        time.sleep(0.05)


def test_webhook_delivery_becomes_content_with_availability(client: TestClient) -> None:
    r = deliver(client, [netflix_title(80000001, "The Matrix", 1999)], delivery="d-1")
    assert r.status_code == 202, r.text
    assert r.json()["read"] == 1 and r.json()["appended"] == 2  # observed + availability
    cid = new_cluster_id("netflix", "80000001")
    doc = eventually(lambda: client.get(f"/v1/content/{cid}"), lambda d: d["availability"])
    assert doc["title"] == "The Matrix" and doc["platform_ids"] == {"netflix": ["80000001"]}
    offer = doc["availability"][0]
    assert offer["platform"] == "netflix" and offer["offer_type"] == "subscription"
    assert offer["available_now"] is True
    assert offer["deep_links"] == {
        "web": "https://www.netflix.com/title/80000001",
        "app": "nflx://title/80000001",
    }
    assert 0 < doc["quality"]["score"] <= 1 and doc["quality"]["freshness"] > 0

    hulu = json.dumps(
        [{"huluId": "h-1", "name": "Matrix, The", "year": 1999}]
    ).encode()  # a body hulu's format cannot read: refused, nothing appended
    bad = deliver(client, hulu, platform="hulu", delivery="h-0")
    assert bad.status_code in (400, 422) and bad.json()["field"]

    # an unchanged record appends nothing; a new region does
    # (signed at another time: the same signature twice would be refused as a replay)
    again = deliver(
        client, [netflix_title(80000001, "The Matrix", 1999)], delivery="d-2",
        at=int(time.time()) - 30,
    )  # fmt: skip
    assert again.status_code == 202 and again.json()["appended"] == 0
    assert again.json()["unchanged"] == 1
    gb = netflix_title(80000001, "The Matrix", 1999)
    gb["availability"].append(
        {"country": "GB", "plan": "premium", "maxQuality": "UHD", "endDate": day(5)}
    )
    assert deliver(client, [gb], delivery="d-3").json()["appended"] == 2
    doc = eventually(
        lambda: client.get(f"/v1/content/{cid}?region=GB"), lambda d: d["availability"]
    )
    assert [o["region"] for o in doc["availability"]] == ["GB"]
    assert doc["availability"][0]["quality"] == "UHD"


def test_webhook_rejects_forgeries_replays_and_bad_bodies(client: TestClient) -> None:
    titles = [netflix_title(80000002, "Heat", 1995)]
    forged = deliver(client, titles, delivery="f-1", secret="not-the-secret")
    assert forged.status_code == 401 and forged.json()["field"] == "X-MGW-Signature"
    stale = deliver(client, titles, delivery="f-2", at=int(time.time()) - 301)
    assert stale.status_code == 401 and stale.json()["field"] == "X-MGW-Timestamp"
    future = deliver(client, titles, delivery="f-3", at=int(time.time()) + 400)
    assert future.status_code == 401
    assert deliver(client, titles, delivery="ok-1").status_code == 202
    replay = deliver(client, titles, delivery="ok-1")
    assert replay.status_code == 409 and replay.json()["field"] == "X-MGW-Delivery"

    broken = deliver(client, b'{"titles": [', delivery="b-1")
    assert broken.status_code == 400 and broken.json()["field"] == "body"
    # a refused body does not burn its delivery id: the fixed retry goes through
    assert deliver(client, titles, delivery="b-1", at=int(time.time()) - 20).status_code == 202

    no_title = netflix_title(80000003, "", 2001)
    bad = deliver(client, [no_title], delivery="b-2")
    assert bad.status_code == 422 and "title" in bad.json()["field"]
    partly = deliver(client, [no_title, netflix_title(80000004, "Ronin", 1998)], delivery="b-3")
    assert partly.status_code == 202
    assert partly.json()["read"] == 1 and len(partly.json()["rejected"]) == 1

    # the delivery id is not signed: a captured delivery under a fresh id is a replay too
    ts = int(time.time())
    body = json.dumps({"titles": titles}).encode()
    for delivery in ("cap-1", "cap-2"):
        captured = client.post(
            "/v1/webhooks/netflix",
            content=body,
            headers={
                "X-MGW-Timestamp": str(ts),
                "X-MGW-Signature": sign(SECRET, ts, body),
                "X-MGW-Delivery": delivery,
            },
        )
    assert captured.status_code == 409 and captured.json()["field"] == "X-MGW-Signature"
    # odd headers are refused, never a 500
    for headers in (
        {"X-MGW-Timestamp": str(ts), "X-MGW-Signature": "sha256=\u00e9\u00e9".encode("latin-1")},
        {"X-MGW-Timestamp": "9" * 400, "X-MGW-Signature": "sha256=00"},
        {"X-MGW-Timestamp": "-5", "X-MGW-Signature": "sha256=00"},
    ):
        odd = client.post(
            "/v1/webhooks/netflix",
            content=body,
            headers={**headers, "X-MGW-Delivery": "odd"},
        )
        assert odd.status_code == 401, (headers, odd.text)

    assert client.post("/v1/webhooks/myspace", content=b"{}").status_code == 404
    unconfigured = deliver(client, titles, platform="peacock", delivery="p-1")
    assert unconfigured.status_code == 503 and unconfigured.json()["field"] == "platform"
    unsigned = client.post("/v1/webhooks/netflix", content=b"{}")
    assert unsigned.status_code == 401 and unsigned.json()["field"] == "X-MGW-Timestamp"


def test_a_hidden_title_leaves_the_new_and_leaving_lists(
    client: TestClient, admin: dict[str, str]
) -> None:
    offer = {"country": "US", "plan": "standard", "maxQuality": "HD", "startDate": day(-2)}
    ending = {**offer, "endDate": day(4)}
    titles = [
        netflix_title(80000900, "Quietly Pulled", 2011, availability=[ending]),
        netflix_title(80000901, "Still Showing", 2012, availability=[ending]),
    ]
    assert deliver(client, titles, delivery="moderated").status_code == 202
    for path in ("/v1/catalog/new?region=US&days=30", "/v1/catalog/leaving?region=US&days=7"):
        eventually(
            lambda path=path: client.get(path),  # type: ignore[misc]
            lambda d: {"Quietly Pulled", "Still Showing"} <= {i["title"] for i in d["items"]},
        )
    hidden = new_cluster_id("netflix", "80000900")
    r = client.post(f"/v1/admin/moderation/{hidden}/decisions", headers=admin,
                    json={"action": "hide", "note": "rights dispute"})  # fmt: skip
    assert r.status_code == 202, r.text
    # the decision's token is honoured by the lists: the next read already leaves it out
    seen = {"X-Consistency-Token": r.headers["X-Consistency-Token"]}
    for path in ("/v1/catalog/new?region=US&days=30", "/v1/catalog/leaving?region=US&days=7"):
        listed = client.get(path, headers=seen)
        assert listed.status_code == 200, listed.text
        names = [i["title"] for i in listed.json()["items"]]
        assert "Still Showing" in names and "Quietly Pulled" not in names, (path, names)


def test_new_and_leaving_lists_page_with_stable_cursors(client: TestClient) -> None:
    arrivals = [
        netflix_title(80000100 + i, f"Arrival {chr(65 + i)}", 2000 + i, availability=[
            {"country": "US", "plan": "standard", "maxQuality": "HD", "startDate": day(-1 - i)}
        ])
        for i in range(4)
    ]  # fmt: skip
    leaving = netflix_title(80000200, "Leaving Title", 1990, availability=[
        {"country": "US", "plan": "standard", "maxQuality": "HD", "endDate": day(3)}
    ])  # fmt: skip
    future = netflix_title(80000300, "Coming Soon", 2027, availability=[
        {"country": "US", "plan": "standard", "maxQuality": "HD", "startDate": day(20)}
    ])  # fmt: skip
    assert deliver(client, [*arrivals, leaving, future], delivery="lists").status_code == 202
    eventually(
        lambda: client.get("/v1/catalog/new?region=us&days=30"),
        lambda d: len(d["items"]) == 4 and all(i["title"] for i in d["items"]),
    )
    seen: list[str] = []
    url = "/v1/catalog/new?region=US&days=30&limit=1"
    page = client.get(url).json()
    seen += [i["title"] for i in page["items"]]
    # a title arriving between pages neither shifts nor repeats the pages after it
    # (starting today it sorts before the cursor; one sorting after it would rightly show)
    newest = netflix_title(80000400, "Newest", 2024, availability=[
        {"country": "US", "plan": "standard", "maxQuality": "HD", "startDate": day(0)}
    ])  # fmt: skip
    assert deliver(client, [newest], delivery="between").status_code == 202
    eventually(
        lambda: client.get("/v1/catalog/new?region=US&days=30"),
        lambda d: any(i["title"] == "Newest" for i in d["items"]),
    )
    while page["next_cursor"]:
        page = client.get(f"{url}&cursor={page['next_cursor']}").json()
        seen += [i["title"] for i in page["items"]]
    assert seen == ["Arrival A", "Arrival B", "Arrival C", "Arrival D"]  # newest first

    going = client.get("/v1/catalog/leaving?region=US&days=7&platform=netflix").json()
    assert [i["title"] for i in going["items"]] == ["Leaving Title"]
    assert datetime.fromisoformat(going["items"][0]["available_until"]) > datetime.now(UTC)
    assert client.get("/v1/catalog/leaving?region=GB").json()["items"] == []

    cid = new_cluster_id("netflix", "80000300")
    avail = client.get(f"/v1/content/{cid}/availability?region=US").json()
    assert avail["items"][0]["available_now"] is False  # starts in 20 days

    for bad, field in [
        ("/v1/catalog/new?region=USA", "region"),
        ("/v1/catalog/new?platform=myspace", "platform"),
        ("/v1/catalog/new?days=0", "days"),
        ("/v1/catalog/leaving?cursor=bm9wZQ", "cursor"),
        (
            "/v1/catalog/leaving?cursor=" + _cursor(["2026-01-01T00:00:00+00:00", NUL, "b"]),
            "cursor",
        ),  # fmt: skip
        (f"/v1/catalog/new?cursor={_cursor([[[[[[[[[[]]]]]]]]]] * 3)}", "cursor"),
        (f"/v1/content/{cid}/availability?cursor=%%%", "cursor"),
    ]:
        r = client.get(bad)
        assert r.status_code == 422 and r.json()["field"] == field, (bad, r.text)
    assert client.get("/v1/content/nope/availability").status_code == 404
    assert client.get("/v1/content/a%00b").status_code == 404
    assert client.get("/v1/content/a%00b/availability").status_code == 404


def _cursor(parts: Any) -> str:
    import base64

    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")
