"""Notifications end to end: feeds and catalog events -> the notifications projector ->
the API, the Redis push, and the digest over real SMTP (aiosmtpd), on real PostgreSQL,
Redis and the embedded log."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest
import redis
from starlette.testclient import TestClient

from core import fanout
from core.settings import Settings
from domain import notifications as rules
from projections.notifications import NotificationsProjector, NotificationSteps
from projections.registry import by_name
from tests.helpers import content
from tests.identity_helpers import admin_headers, bearer, new_user, password_login
from tests.mail_server import MailBox, link_in, smtp_server
from tests.test_search import SECRET
from tests.test_search import _deliver as deliver

REDIS_DB = 13


@pytest.fixture(scope="module")
def mailbox() -> Iterator[MailBox]:
    with smtp_server() as box:
        yield box


@pytest.fixture(scope="module")
def nc(
    tmp_path_factory: pytest.TempPathFactory, services: Any, mailbox: MailBox
) -> Iterator[TestClient]:
    from dataclasses import replace

    from mgw.app import create_app
    from tests.conftest import _TEMPLATE, TEST_IDENTITY

    name = f"notif_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("notifications") / "data",
        database_url=services.db_uri(name),
        redis_url=f"unix://{services.redis_socket}?db={REDIS_DB}",
        batch_linger_ms=0,
        webhook_secrets=(("netflix", SECRET),),
        identity=replace(TEST_IDENTITY, smtp_host=mailbox.host, smtp_port=mailbox.port),
    )
    with TestClient(create_app(settings)) as c:
        c.app.state.db_uri = services.db_uri(name)  # type: ignore[attr-defined]
        c.app.state.redis_socket = services.redis_socket  # type: ignore[attr-defined]
        yield c


# -- helpers -------------------------------------------------------------------------------


def _sql(c: TestClient, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(c.app.state.db_uri, autocommit=True) as conn:  # type: ignore[attr-defined]
        return conn.execute(sql, args).fetchall()


def _until(what: str, check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.05)


def settle(c: TestClient) -> None:
    """Until the notifications projector has applied every record of its topics, the
    events it derived from them included (seen twice with no new record in between)."""
    mgw = c.app.state.mgw  # type: ignore[attr-defined]
    topics = by_name("notifications").topics

    async def ends() -> dict[tuple[str, int], int]:
        out = {}
        for t in topics:
            for p, o in (await mgw.log.end_offsets(t)).items():
                if o > 0:
                    out[(t, p)] = o
        return out

    previous = None
    deadline = time.monotonic() + 60
    while True:
        end = c.portal.call(ends)  # type: ignore[union-attr]
        marks = {
            (t, p): o
            for t, p, o in _sql(
                c,
                "SELECT topic, partition, next_offset FROM projection_watermarks"
                " WHERE projector = 'notifications'",
            )
        }
        done = all(marks.get(k, 0) >= o for k, o in end.items())
        if done and end == previous:
            return
        previous = end if done else None
        assert time.monotonic() < deadline, (end, marks)
        time.sleep(0.05)


def netflix(  # type: ignore[no-untyped-def]
    nid: int,
    title: str,
    imdb: str,
    regions: tuple[str, ...],
    until: str | None = None,
    rev: int = 0,
):
    """A Netflix feed with one title; ``rev`` tells repeated deliveries apart (the webhook
    refuses a signed body it has seen)."""
    offers = [
        {"country": r, "plan": "standard", "maxQuality": "HD", "startDate": "2020-01-01"}
        for r in regions
    ]
    for o in offers:
        if until:
            o["endDate"] = until
    return {
        "titles": [{
            "netflixId": nid, "type": "movie", "title": title, "releaseYear": 2001,
            "runtimeMinutes": 100 + rev, "genres": ["Dramas"], "imdbId": imdb,
            "availability": offers,
            "links": {"web": f"https://www.netflix.com/title/{nid}", "app": f"nflx://title/{nid}"},
        }]
    }  # fmt: skip


def cid_of(c: TestClient, title: str) -> str:
    rows = _until(title, lambda: _sql(c, "SELECT content_id FROM content WHERE title = %s", title))
    return str(rows[0][0])


def notifications(c: TestClient, h: dict[str, str], **params: Any) -> dict[str, Any]:
    r = c.get("/v1/me/notifications", params=params, headers=h)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def watch(c: TestClient, h: dict[str, str], cid: str, platforms: list[str] | None) -> None:
    """Watchlist (and services, when given) set, and the library projection showing them."""
    if platforms is not None:
        r = c.put("/v1/me/services", json={"region": "US", "platforms": platforms}, headers=h)
        assert r.status_code in (200, 202), r.text
    r = c.post("/v1/me/watchlist", json={"content_id": cid}, headers=h)
    assert r.status_code in (200, 202), r.text
    token = r.headers["X-Consistency-Token"]
    got = c.get("/v1/me/watchlist", headers={**h, "X-Consistency-Token": token})
    assert cid in [i["content_id"] for i in got.json()["items"]], got.text


def _days(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).strftime("%Y-%m-%d")


def _steps(c: TestClient) -> NotificationSteps:
    return NotificationSteps(c.app.state.mgw.stores)  # type: ignore[attr-defined]


# -- available ------------------------------------------------------------------------------


def test_a_watchlist_title_arriving_on_my_service_is_notified_once_listed_and_pushed(
    nc: TestClient,
) -> None:
    c = nc
    deliver(c, "netflix", netflix(7001, "Arrival Test", "tt7000001", ("GB",)))
    cid = cid_of(c, "Arrival Test")
    settle(c)
    uid, h = new_user(c)
    watch(c, h, cid, ["netflix"])
    settle(c)
    assert notifications(c, h)["items"] == []  # in GB only: not on my services yet

    r = redis.Redis(unix_socket_path=c.app.state.redis_socket, db=REDIS_DB)  # type: ignore[attr-defined]
    sub = r.pubsub(ignore_subscribe_messages=True)
    sub.subscribe(fanout.channel(uid))
    online = r.pipeline()
    fanout.mark_online(online, [uid])  # as a hub holding one of the user's sockets does
    online.execute()
    try:
        deliver(c, "netflix", netflix(7001, "Arrival Test", "tt7000001", ("GB", "US")))
        page = _until("the notification", lambda: (p := notifications(c, h))["items"] and p)
        [item] = page["items"]
        assert item["kind"] == "available" and item["content_id"] == cid
        assert item["data"] == {"platform": "netflix", "region": "US"}
        assert item["title"] == "Arrival Test is now on Netflix" and item["read"] is False
        assert page["unread_count"] == 1

        def pushed() -> dict[str, Any] | None:
            msg = sub.get_message(timeout=0.2)
            return json.loads(msg["data"]) if msg else None

        message = _until("the push", pushed)
        assert message == {"type": "notification", "notification": item}
    finally:
        sub.close()
        r.close()

    # the feed again, out of the region and back: the same title and kind stay one
    deliver(c, "netflix", netflix(7001, "Arrival Test", "tt7000001", ("US",), until=_days(300)))
    deliver(c, "netflix", netflix(7001, "Arrival Test", "tt7000001", ("GB",), rev=1))
    deliver(c, "netflix", netflix(7001, "Arrival Test", "tt7000001", ("US",), rev=2))
    settle(c)
    assert [i["id"] for i in notifications(c, h)["items"]] == [item["id"]]


def test_a_kind_turned_off_produces_no_notification(nc: TestClient) -> None:
    c = nc
    deliver(c, "netflix", netflix(7002, "Muted Test", "tt7000002", ("GB",)))
    cid = cid_of(c, "Muted Test")
    _, muted = new_user(c)
    _, control = new_user(c)
    r = c.put("/v1/me/notifications/preferences", json={"kinds": {"available": False}},
              headers=muted)  # fmt: skip
    assert r.status_code == 202, r.text
    prefs = c.get(
        "/v1/me/notifications/preferences",
        headers={**muted, "X-Consistency-Token": r.headers["X-Consistency-Token"]},
    ).json()
    assert prefs == {
        "kinds": {"available": False, "leaving": True, "new_episode": True, "broadcast": True},
        "digest": "off",
    }
    settle(c)
    for h in (muted, control):
        watch(c, h, cid, ["netflix"])
    settle(c)
    deliver(c, "netflix", netflix(7002, "Muted Test", "tt7000002", ("US",)))
    _until("the control's notification", lambda: notifications(c, control)["items"])
    settle(c)
    assert notifications(c, muted) == {
        "items": [], "unread_count": 0, "next_cursor": None, "latest_cursor": None,
    }  # fmt: skip


# -- new episodes and the parental limit ----------------------------------------------------


def test_new_episodes_reach_watchers_and_players_within_their_parental_limit(
    nc: TestClient,
) -> None:
    c = nc
    show = f"show-{uuid.uuid4().hex[:6]}"
    publish = c.app.state.mgw.publisher.publish_many  # type: ignore[attr-defined]
    first = f"{show}-s1e1"
    c.portal.call(publish, [  # type: ignore[union-attr]
        content(show, "The Test Show", kind="series"),
        content(first, "Pilot", kind="episode", series_id=show, season=1, episode=1,
                rating="TV-PG"),
    ])  # fmt: skip
    cid_of(c, "Pilot")
    settle(c)
    _, family = new_user(c)  # a kids profile: TV-PG at most
    r = c.post("/v1/me/profiles", json={"name": "Kids", "max_rating": "TV-PG"}, headers=family)
    assert r.status_code in (201, 202), r.text
    _, adult = new_user(c)  # no limit
    _, player = new_user(c)  # no watchlist: played the pilot
    for h in (family, adult):
        watch(c, h, show, None)
    r = c.post("/v1/playback/events", headers=player, json={
        "content_id": first, "device_id": "tv", "kind": "progress", "position_s": 600,
        "duration_s": 3000,
    })  # fmt: skip
    assert r.status_code == 202, r.text
    _until("the play", lambda: _sql(c, "SELECT 1 FROM playback_positions WHERE content_id = %s",
                                    first))  # fmt: skip
    _until("the kids profile", lambda: _sql(c, "SELECT 1 FROM profiles WHERE max_rating = %s"
                                            " AND name = 'Kids'", "TV-PG"))  # fmt: skip

    c.portal.call(publish, [  # type: ignore[union-attr]
        content(f"{show}-s1e2", "Dark Night", kind="episode", series_id=show, season=1,
                episode=2, rating="TV-MA"),
        content(f"{show}-s2e1", "New Dawn", kind="episode", series_id=show, season=2,
                episode=1, rating="TV-PG"),
    ])  # fmt: skip
    _until("the adult's two", lambda: len(notifications(c, adult)["items"]) == 2)
    settle(c)

    def seen(h: dict[str, str]) -> list[tuple[str, str]]:
        return [(i["kind"], i["body"]) for i in notifications(c, h)["items"]]

    # the two episodes sit in different catalog partitions: either may be decided first
    assert sorted(seen(adult)) == [
        ("new_episode", "Season 1, episode 2: Dark Night is out."),
        ("new_episode", "Season 2, episode 1: New Dawn is out."),
    ]
    assert sorted(seen(player)) == sorted(seen(adult))
    assert seen(family) == [("new_episode", "Season 2, episode 1: New Dawn is out.")]
    assert {i["title"] for i in notifications(c, adult)["items"]} == {
        "New episode of The Test Show"
    }
    # the same episode from another source is no news
    c.portal.call(publish, [  # type: ignore[union-attr]
        content(f"{show}-s2e1-dup", "New Dawn", kind="episode", series_id=show, season=2,
                episode=1, rating="TV-PG"),
    ])  # fmt: skip
    cid_of(c, "New Dawn")
    settle(c)
    assert len(notifications(c, adult)["items"]) == 2


# -- leaving --------------------------------------------------------------------------------


def test_a_watchlist_title_leaving_my_services_within_7_days_is_notified_once(
    nc: TestClient,
) -> None:
    c = nc
    deliver(c, "netflix", netflix(7003, "Leaving Soon", "tt7000003", ("US",), until=_days(5)))
    deliver(c, "netflix", netflix(7004, "Leaving Later", "tt7000004", ("US",), until=_days(20)))
    soon, later = cid_of(c, "Leaving Soon"), cid_of(c, "Leaving Later")
    _until("availability", lambda: len(_sql(
        c, "SELECT 1 FROM availability WHERE platform_id IN ('7003', '7004')")) == 2)  # fmt: skip
    uid, h = new_user(c)
    for cid in (soon, later):
        watch(c, h, cid, ["netflix"])
    settle(c)
    steps = _steps(c)
    assert c.portal.call(steps.sweep_leaving) >= 1  # type: ignore[union-attr]
    settle(c)
    items = notifications(c, h)["items"]
    assert [(i["kind"], i["content_id"]) for i in items] == [("leaving", soon)]
    assert items[0]["data"]["platform"] == "netflix"
    assert items[0]["data"]["leaving_at"].startswith(_days(5))
    # the next sweep finds it notified already
    assert c.portal.call(steps.sweep_leaving) == 0  # type: ignore[union-attr]
    # a week on, the later one is within the window too
    in_two_weeks = datetime.now(UTC) + timedelta(days=14)
    c.portal.call(steps.sweep_leaving, in_two_weeks)  # type: ignore[union-attr]
    settle(c)
    kinds = sorted((i["kind"], i["content_id"]) for i in notifications(c, h)["items"])
    assert kinds == sorted([("leaving", soon), ("leaving", later)])


# -- broadcasts and marking read -----------------------------------------------------------


def test_broadcasts_reach_everyone_and_marks_read_move_the_unread_count(nc: TestClient) -> None:
    c = nc
    admin = admin_headers(c)
    _, h = new_user(c)
    r = c.post("/v1/admin/notifications/broadcast", json={"title": "x", "body": "y"}, headers=h)
    assert r.status_code == 403
    r = c.post("/v1/admin/notifications/broadcast", json={"title": "", "body": "y"},
               headers=admin)  # fmt: skip
    assert r.status_code == 422 and r.json()["field"] == "title", r.text
    ids = []
    for n in range(3):
        r = c.post("/v1/admin/notifications/broadcast",
                   json={"title": f"News {n}", "body": "Something new", "url": "https://x.test/"},
                   headers=admin)  # fmt: skip
        assert r.status_code == 202 and r.headers["X-Consistency-Token"], r.text
        ids.append(r.json()["broadcast_id"])
    page = _until("three broadcasts", lambda: (p := notifications(c, h))["unread_count"] == 3 and p)
    assert [i["title"] for i in page["items"]] == ["News 2", "News 1", "News 0"]
    assert page["items"][0]["data"] == {"url": "https://x.test/"}

    def read(body: Any) -> Any:
        return c.post("/v1/me/notifications/read", json=body, headers=h)

    def after(r: Any) -> dict[str, Any]:
        assert r.status_code == 202, r.text
        return notifications(c, {**h, "X-Consistency-Token": r.headers["X-Consistency-Token"]})

    two = notifications(c, h, limit=2)
    assert len(two["items"]) == 2 and two["next_cursor"]
    # that one and the older ones: News 1 and News 0
    state = after(read({"before": two["next_cursor"]}))
    assert state["unread_count"] == 1
    assert [i["title"] for i in notifications(c, h, unread="true")["items"]] == ["News 2"]
    newest = page["items"][0]["id"]
    state = after(read({"ids": [newest]}))
    assert state["unread_count"] == 0 and all(i["read"] for i in state["items"])
    r = c.post("/v1/admin/notifications/broadcast", json={"title": "More", "body": "z"},
               headers=admin)  # fmt: skip
    _until("the fourth", lambda: notifications(c, h)["unread_count"] == 1)
    assert after(read({"all": True}))["unread_count"] == 0
    # the older page follows the cursor
    older = notifications(c, h, limit=2, cursor=two["next_cursor"])
    assert [i["title"] for i in older["items"]] == ["News 0"] and older["next_cursor"] is None


def test_malformed_requests_name_the_field(nc: TestClient) -> None:
    c = nc
    _, h = new_user(c)
    cases = [
        ("POST", "/v1/me/notifications/read", {}, "ids"),
        ("POST", "/v1/me/notifications/read", {"ids": []}, "ids"),
        ("POST", "/v1/me/notifications/read", {"ids": ["a"], "all": True}, "all"),
        ("POST", "/v1/me/notifications/read", {"all": False}, "all"),
        ("POST", "/v1/me/notifications/read", {"before": "garbage"}, "cursor"),
        ("PUT", "/v1/me/notifications/preferences", {"kinds": {"nope": True}}, "kinds.nope"),
        ("PUT", "/v1/me/notifications/preferences", {"digest": "weekly"}, "digest"),
        ("PUT", "/v1/me/notifications/preferences", {"digest": "daily"}, "digest"),  # unverified
    ]
    for method, path, body, field in cases:
        r = c.request(method, path, json=body, headers=h)
        assert 400 <= r.status_code < 500, (body, r.text)
        assert r.json()["field"] == field, (body, r.json())
    assert (
        c.get("/v1/me/notifications", params={"unread": "maybe"}, headers=h).json()["field"]
        == "unread"
    )
    assert c.get("/v1/me/notifications").status_code == 401


# -- the daily digest -------------------------------------------------------------------------


def _digests(box: MailBox, to: str) -> list[EmailMessage]:
    return [
        m for m in list(box.messages)
        if to in str(m["To"]) and "digest" in str(m["Subject"])
    ]  # fmt: skip


def test_the_daily_digest_is_mailed_once_a_day_and_one_click_unsubscribes(
    nc: TestClient, mailbox: MailBox
) -> None:
    c = nc
    email = f"digest.{uuid.uuid4().hex[:6]}@example.com"
    r = c.post(
        "/v1/auth/register",
        json={"email": email, "password": "a long test passphrase", "display_name": "Di"},
    )
    assert r.status_code == 201, r.text  # fmt: skip
    h = bearer(password_login(c, email, "a long test passphrase").json())
    link = link_in(mailbox.wait_for(email), "/v1/auth/verify-email")
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert c.post("/v1/auth/verify-email", json={"token": token}).status_code == 200
    r = c.put("/v1/me/notifications/preferences", json={"digest": "daily"}, headers=h)
    assert r.status_code == 202, r.text

    admin = admin_headers(c)
    c.post("/v1/admin/notifications/broadcast", json={"title": "Digest me", "body": "Hello"},
           headers=admin)  # fmt: skip
    _until("the broadcast", lambda: notifications(c, h)["unread_count"] >= 1)
    settle(c)
    steps = _steps(c)
    assert c.portal.call(steps.send_digests) == 1  # type: ignore[union-attr]
    [mail] = _until("the digest", lambda: _digests(mailbox, email))
    assert "Digest me" in str(mail.get_body(preferencelist=("plain",)).get_content())  # type: ignore[union-attr]
    unsubscribe = link_in(mail, "/v1/notifications/unsubscribe")
    assert mail["List-Unsubscribe"] == f"<{unsubscribe}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # the same day again, and after a restart (a new step): nothing more
    assert c.portal.call(steps.send_digests) == 0  # type: ignore[union-attr]
    settle(c)
    assert c.portal.call(_steps(c).send_digests) == 0  # type: ignore[union-attr]
    assert len(_digests(mailbox, email)) == 1

    path = urlsplit(unsubscribe)
    target = f"{path.path}?{path.query}"
    page = c.get(target)
    assert page.status_code == 200 and 'method="post"' in page.text
    assert c.get("/v1/notifications/unsubscribe?token=x.y").json()["field"] == "token"
    assert c.post(target.replace("token=", "token=A")).status_code == 400
    r = c.post(target, content=b"List-Unsubscribe=One-Click",
               headers={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 200, r.text
    prefs = c.get(
        "/v1/me/notifications/preferences",
        headers={**h, "X-Consistency-Token": r.headers["X-Consistency-Token"]},
    )
    assert prefs.json()["digest"] == "off"  # fmt: skip

    c.post("/v1/admin/notifications/broadcast", json={"title": "After", "body": "More"},
           headers=admin)  # fmt: skip
    _until("the next broadcast", lambda: notifications(c, h)["unread_count"] >= 2)
    settle(c)
    tomorrow = datetime.now(UTC) + timedelta(days=1)
    assert c.portal.call(_steps(c).send_digests, tomorrow) == 0  # type: ignore[union-attr]
    assert len(_digests(mailbox, email)) == 1


# -- replay and the pure parts ---------------------------------------------------------------


def test_replay_rebuilds_the_notifications_identically(nc: TestClient) -> None:
    """Last of the end-to-end tests: every kind of notification event is in the log."""
    from projections import maintenance
    from streams.processing import ProjectionPipeline
    from streams.runner import ProjectorLoop

    c = nc
    settle(c)
    mgw = c.app.state.mgw  # type: ignore[attr-defined]
    projector = by_name("notifications")

    async def replay() -> tuple[str, int, str]:
        before = await maintenance.checksum(mgw.stores, projector)
        await maintenance.clear(mgw.stores, projector)
        loop = ProjectorLoop(
            ProjectionPipeline(projector, mgw.stores, mgw.log, dead_letters=False, emit=False),
            mgw.log,
            linger_ms=0,
        )
        applied = await loop.catch_up()
        return before, applied, await maintenance.checksum(mgw.stores, projector)

    before, applied, after = c.portal.call(replay)  # type: ignore[union-attr]
    assert applied > 20
    assert after == before


def test_announce_pushes_each_new_notification_as_listed() -> None:
    item = {"id": "n1", "kind": "broadcast", "title": "Hi"}
    pushes = NotificationsProjector().announce([("u1", item), ("u2", item)])
    assert pushes == [
        fanout.Push("u1", {"type": "notification", "notification": item}),
        fanout.Push("u2", {"type": "notification", "notification": item}),
    ]
    assert NotificationsProjector().announce([]) == []


def test_rules() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    day = timedelta(days=1)
    assert rules.leaving_at([now + 3 * day, now + 5 * day], now) == now + 5 * day
    assert rules.leaving_at([now + 3 * day, None], now) is None  # one offer stays
    assert rules.leaving_at([now + 8 * day], now) is None  # beyond the week
    assert rules.leaving_at([], now) is None
    assert rules.account_limit([None, "R", "TV-PG"]) == "TV-PG"
    assert rules.account_limit([None]) is None
    assert rules.may_notify("PG", [None, "TV-PG"]) and not rules.may_notify("R", ["TV-PG"])
    assert not rules.may_notify(None, ["R"])  # unrated counts as the strictest
    assert rules.may_notify(None, ["R"], unrated_as="allowed")
    assert rules.kind_allowed({}, "leaving")
    assert not rules.kind_allowed({"leaving": False}, "leaving")
    key = b"k" * 32
    token = rules.unsubscribe_token(key, "user-1")
    assert rules.unsubscribe_user(key, token) == "user-1"
    assert rules.unsubscribe_user(b"x" * 32, token) is None
    assert rules.unsubscribe_user(key, rules.unsubscribe_token(key, "user-2")[:-1] + "A") is None
    assert rules.unsubscribe_user(key, "no-dot") is None
