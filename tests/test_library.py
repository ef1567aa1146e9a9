"""The library end to end: REST commands and device sync batches -> library events ->
the library projector -> the queries, on real PostgreSQL and the embedded log."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from tests.identity_helpers import new_user
from tests.test_search import SECRET
from tests.test_search import _deliver as deliver
from tests.test_search import _nf as netflix_title


@pytest.fixture(scope="module")
def lib_client(tmp_path_factory: pytest.TempPathFactory, services: Any) -> Iterator[TestClient]:
    from mgw.app import create_app
    from tests.conftest import TEST_IDENTITY

    name = f"library_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("library") / "data",
        database_url=services.db_uri(name),
        redis_url=f"unix://{services.redis_socket}?db=14",
        batch_linger_ms=0,
        webhook_secrets=(("netflix", SECRET),),
        identity=TEST_IDENTITY,
    )
    with TestClient(create_app(settings)) as c:
        deliver(c, "netflix", {"titles": [
            _nf(101, "Toy Story", 1995, "tt0114709"),
            _nf(102, "Heat", 1995, "tt0113277", until=_days(10)),
            _nf(103, "Jumanji", 1995, "tt0113497", until=_days(200)),
        ]})  # fmt: skip
        c.app.state.db_uri = services.db_uri(name)  # type: ignore[attr-defined]
        _wait_titles(c, 3)
        yield c


def _days(n: int) -> str:
    return (datetime.now(UTC) + timedelta(days=n)).strftime("%Y-%m-%d")


def _nf(nid: int, title: str, year: int, imdb: str, until: str | None = None) -> dict[str, Any]:
    record = netflix_title(nid, title, year, imdb)
    if until:
        record["availability"][0]["endDate"] = until
    return record


def _sql(c: TestClient, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(c.app.state.db_uri, autocommit=True) as conn:  # type: ignore[attr-defined]
        return conn.execute(sql, args).fetchall()


def _wait_titles(c: TestClient, n: int) -> None:
    deadline = time.monotonic() + 60
    while True:
        rows = _sql(
            c,
            "SELECT count(DISTINCT a.platform_id) FROM availability a JOIN platform_titles t"
            " USING (platform, platform_id) JOIN content USING (content_id)",
        )
        if rows[0][0] >= n:
            return
        assert time.monotonic() < deadline, rows
        time.sleep(0.1)


def cid(c: TestClient, title: str) -> str:
    rows = _sql(c, "SELECT content_id FROM content WHERE title = %s", title)
    assert rows, title
    return str(rows[0][0])


def at(seconds_ago: float = 0) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds_ago)).isoformat()


def op(
    kind: str, content_id: str | None = None, value: Any = None, ago: float = 0
) -> dict[str, Any]:
    o: dict[str, Any] = {"op_id": str(uuid.uuid4()), "kind": kind, "at": at(ago)}
    if content_id is not None:
        o["content_id"] = content_id
    if value is not None:
        o["value"] = value
    return o


def sync(c: TestClient, h: dict[str, str], device: str, ops: list[dict[str, Any]],
         since: str | None = None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"device_id": device, "ops": ops}
    if since:
        body["since"] = since
    r = c.post("/v1/sync", json=body, headers=h)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    assert out["applied"], out
    return out


def pull(c: TestClient, h: dict[str, str], since: str | None = None) -> dict[str, Any]:
    r = c.get("/v1/sync", params={"since": since} if since else {}, headers=h)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def watchlist(c: TestClient, h: dict[str, str], **params: Any) -> list[str]:
    r = c.get("/v1/me/watchlist", params=params, headers=h)
    assert r.status_code == 200, r.text
    return [i["title"] for i in r.json()["items"]]


class Device:
    """A client replica: it applies the feed to its own copy, as an app would."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.cursor: str | None = None
        self.state: dict[tuple[str, str], Any] = {}
        self.outbox: list[dict[str, Any]] = []

    def pull(self, c: TestClient, h: dict[str, str]) -> None:
        while True:
            page = pull(c, h, self.cursor)
            for ch in page["changes"]:
                k = (ch["entity"], ch.get("content_id", ""))
                if ch["deleted"]:
                    self.state.pop(k, None)
                else:
                    self.state[k] = ch["value"]
            self.cursor = page["cursor"]
            if not page["has_more"]:
                return

    def push(self, c: TestClient, h: dict[str, str]) -> dict[str, Any]:
        out = sync(c, h, self.name, self.outbox, since=self.cursor)
        self.outbox = []
        return out

    def watchlist(self) -> set[str]:
        return {k[1] for k in self.state if k[0] == "watchlist"}


def test_watchlist_edited_offline_on_two_devices_converges_with_deletions(
    lib_client: TestClient,
) -> None:
    c = lib_client
    _, h = new_user(c)
    toy, heat, jumanji = cid(c, "Toy Story"), cid(c, "Heat"), cid(c, "Jumanji")
    phone, tv = Device("phone"), Device("tv")
    phone.outbox = [op("watchlist.add", toy), op("watchlist.add", heat)]
    phone.push(c, h)
    phone.pull(c, h)
    tv.pull(c, h)
    assert phone.watchlist() == tv.watchlist() == {toy, heat}

    # both go offline: the phone removes Heat and Toy Story; the TV adds Jumanji and,
    # not having seen the phone's removal, adds Toy Story again (a concurrent add)
    phone.outbox = [op("watchlist.remove", heat, ago=30), op("watchlist.remove", toy, ago=29)]
    tv.outbox = [op("watchlist.add", jumanji, ago=20), op("watchlist.add", toy, ago=10)]
    tv.push(c, h)
    phone.push(c, h)  # syncs last, but its removals only remove what it had seen
    for d in (phone, tv):
        d.pull(c, h)
    assert phone.watchlist() == tv.watchlist() == {toy, jumanji}
    assert heat not in tv.watchlist()  # the removal reached the device that never saw it
    assert sorted(watchlist(c, h)) == ["Jumanji", "Toy Story"]

    # a device that replays its old batch (lost the answer) changes nothing
    stale = [op("watchlist.add", heat)]
    first = sync(c, h, "tablet", stale)
    again = sync(c, h, "tablet", stale)
    assert [r["status"] for r in first["results"]] == ["applied"]
    assert [r["status"] for r in again["results"]] == ["duplicate"]
    assert sorted(watchlist(c, h)) == ["Heat", "Jumanji", "Toy Story"]


def test_removals_sync_as_tombstones_and_move_last_activities(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)
    toy = cid(c, "Toy Story")
    assert c.post("/v1/me/watchlist", json={"content_id": toy}, headers=h).status_code == 200
    before = c.get("/v1/sync/last-activities", headers=h).json()
    assert before["watchlist"] is not None and before["rating"] is None
    cursor = pull(c, h)["cursor"]
    time.sleep(0.01)
    assert c.delete(f"/v1/me/watchlist/{toy}", headers=h).status_code == 200
    after = c.get("/v1/sync/last-activities", headers=h).json()
    assert after["watchlist"] > before["watchlist"]  # a removal moves it too
    changes = pull(c, h, cursor)["changes"]
    assert changes == [
        {
            "entity": "watchlist",
            "content_id": toy,
            "deleted": True,
            "changed_at": changes[0]["changed_at"],
            "device_id": "api",
        }
    ]
    assert watchlist(c, h) == []


def test_ratings_are_last_writer_wins_on_the_device_clock(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)
    heat = cid(c, "Heat")
    # the TV rated at 10:05, the phone rated at 10:00 offline and syncs later: 10:05 stays
    sync(c, h, "tv", [op("rating.set", heat, {"rating": 9}, ago=60)])
    sync(c, h, "phone", [op("rating.set", heat, {"rating": 3}, ago=300)])
    items = c.get("/v1/me/ratings", headers=h).json()["items"]
    assert [(i["content_id"], i["rating"]) for i in items] == [(heat, 9)]
    # a removal is a newer write: the rating goes, and an older set cannot bring it back
    assert c.delete(f"/v1/me/ratings/{heat}", headers=h).status_code == 200
    sync(c, h, "phone", [op("rating.set", heat, {"rating": 4}, ago=120)])
    assert c.get("/v1/me/ratings", headers=h).json()["items"] == []
    r = c.put(f"/v1/me/ratings/{heat}", json={"rating": 11}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "value.rating"


def test_history_counts_rewatches_and_unwatch_removes_them(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)
    toy = cid(c, "Toy Story")
    for _ in range(2):
        assert c.post("/v1/me/history", json={"content_id": toy}, headers=h).status_code == 200
    items = c.get("/v1/me/history", headers=h).json()["items"]
    assert [(i["title"], i["plays"]) for i in items] == [("Toy Story", 2)]
    assert c.delete(f"/v1/me/history/{toy}", headers=h).status_code == 200
    assert c.get("/v1/me/history", headers=h).json()["items"] == []


def _play(c: TestClient, h: dict[str, str], content_id: str, pos: float, dur: float) -> str:
    r = c.post(
        "/v1/playback/events",
        json={"content_id": content_id, "device_id": "tv", "kind": "progress",
              "position_s": pos, "duration_s": dur},
        headers=h,
    )  # fmt: skip
    assert r.status_code == 202, r.text
    return str(r.headers["X-Consistency-Token"])


def _plays(c: TestClient, h: dict[str, str], token: str) -> dict[str, int]:
    r = c.get("/v1/me/history", headers={**h, "X-Consistency-Token": token})
    assert r.status_code == 200, r.text
    return {i["title"]: i["plays"] for i in r.json()["items"]}


def test_a_play_past_the_watched_threshold_becomes_history_by_itself(
    lib_client: TestClient,
) -> None:
    c = lib_client
    _, h = new_user(c)
    toy, heat = cid(c, "Toy Story"), cid(c, "Heat")
    # an accidental play: 95 % of a 200 s trailer is under the 300 s a play needs to count
    assert _plays(c, h, _play(c, h, heat, 190, 200)) == {}
    _play(c, h, toy, 1200, 6000)
    assert _plays(c, h, _play(c, h, toy, 5500, 6000)) == {"Toy Story": 1}  # past 90 %
    assert _plays(c, h, _play(c, h, toy, 5900, 6000)) == {"Toy Story": 1}  # still one watch
    _play(c, h, toy, 30, 6000)  # started over: a rewatch counts again
    assert _plays(c, h, _play(c, h, toy, 5800, 6000)) == {"Toy Story": 2}
    # the rules are the user's own: with 60 s and 80 %, the short play counts
    r = c.put("/v1/me/settings", json={"min_play_s": 60, "watched_pct": 80}, headers=h)
    assert r.status_code == 200, r.text
    assert c.get("/v1/me/settings", headers=h).json() == {
        "min_resume_pct": 5.0, "watched_pct": 80.0, "min_play_s": 60.0
    }  # fmt: skip
    _play(c, h, heat, 10, 200)
    assert _plays(c, h, _play(c, h, heat, 170, 200)) == {"Toy Story": 2, "Heat": 1}
    r = c.put("/v1/me/settings", json={"watched_pct": 3}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "value.watched_pct"


def test_up_next_merges_continue_watching_with_next_episodes(lib_client: TestClient) -> None:
    from tests.helpers import content

    c = lib_client
    show = f"series-{uuid.uuid4().hex[:6]}"
    ep = {(s, e): f"{show}-s{s}e{e}" for s, e in ((0, 1), (1, 1), (1, 2), (1, 3))}
    events = [content(show, "The Show", kind="series")] + [
        content(i, f"The Show {s}x{e}", kind="episode", series_id=show, season=s, episode=e)
        for (s, e), i in ep.items()
    ]
    c.portal.call(c.app.state.mgw.publisher.publish_many, events)  # type: ignore[attr-defined,union-attr]
    deadline = time.monotonic() + 30
    while len(_sql(c, "SELECT 1 FROM content WHERE series_id = %s", show)) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    _, h = new_user(c)

    def up_next() -> list[tuple[str, str]]:
        r = c.get("/v1/me/up-next", headers=h)
        assert r.status_code == 200, r.text
        return [(i["title"], i["reason"]) for i in r.json()["items"]]

    assert up_next() == []
    c.post("/v1/me/history", json={"content_id": ep[(0, 1)]}, headers=h)  # a special
    assert up_next() == []  # specials are no place in the series
    c.post("/v1/me/history", json={"content_id": ep[(1, 1)]}, headers=h)
    assert up_next() == [("The Show 1x2", "next_episode")]
    toy = cid(c, "Toy Story")
    token = _play(c, h, toy, 3000, 6000)  # half watched: resumable
    assert _plays(c, h, token) == {"The Show 0x1": 1, "The Show 1x1": 1}
    assert up_next() == [("Toy Story", "continue"), ("The Show 1x2", "next_episode")]
    # the user's own resume rules decide what is in progress
    c.put("/v1/me/settings", json={"min_resume_pct": 60}, headers=h)
    assert up_next() == [("The Show 1x2", "next_episode")]
    # continue-watching follows the same rules from the next report on
    token = _play(c, h, toy, 3300, 6000)  # 55 %: under the user's 60 %
    cw = c.get("/v1/me/continue-watching", headers={**h, "X-Consistency-Token": token})
    assert cw.status_code == 200 and cw.json()["items"] == [], cw.text
    token = _play(c, h, toy, 4200, 6000)  # 70 %
    cw = c.get("/v1/me/continue-watching", headers={**h, "X-Consistency-Token": token})
    assert [i["title"] for i in cw.json()["items"]] == ["Toy Story"]
    r = c.post(f"/v1/me/up-next/{ep[(1, 2)]}/hide", headers=h)
    assert r.status_code == 200, r.text
    assert up_next() == [("Toy Story", "continue")]
    changes = pull(c, h)["changes"]
    assert {"entity": "up_next", "content_id": ep[(1, 2)]}.items() <= changes[-1].items()


def test_services_filter_the_watchlist_and_say_what_is_leaving(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)
    for title in ("Toy Story", "Heat", "Jumanji"):
        c.post("/v1/me/watchlist", json={"content_id": cid(c, title)}, headers=h)
    r = c.get("/v1/me/watchlist", params={"available": "mine"}, headers=h)
    assert r.status_code == 409 and "services" in r.json()["detail"]
    r = c.put("/v1/me/services", json={"region": "us", "platforms": ["hulu"]}, headers=h)
    assert r.status_code == 200, r.text
    assert c.get("/v1/me/services", headers=h).json()["region"] == "US"
    assert watchlist(c, h, available="mine") == []
    c.put("/v1/me/services", json={"region": "US", "platforms": ["netflix", "hulu"]}, headers=h)
    items = c.get("/v1/me/watchlist", params={"available": "mine", "sort": "leaving"},
                  headers=h).json()["items"]  # fmt: skip
    assert [i["title"] for i in items][:1] == ["Heat"]  # leaves in 10 days: first
    heat = items[0]
    assert heat["leaving_at"] is not None and heat["streaming"][0]["platform"] == "netflix"
    assert {i["title"]: i["leaving_at"] for i in items}["Jumanji"] is None  # 200 days away
    r = c.put("/v1/me/services", json={"region": "US", "platforms": ["nope"]}, headers=h)
    assert r.status_code == 422 and r.json()["field"] == "value.platforms"


def test_catalog_lists_take_services_mine(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)

    def leaving(**params: Any) -> Any:
        return c.get("/v1/catalog/leaving", params={"days": 30, **params}, headers=h)

    assert "Heat" in [i["title"] for i in leaving().json()["items"]]
    assert leaving(services="mine").status_code == 409  # no services yet
    c.put("/v1/me/services", json={"region": "US", "platforms": ["hulu"]}, headers=h)
    assert leaving(services="mine").json()["items"] == []
    c.put("/v1/me/services", json={"region": "US", "platforms": ["netflix"]}, headers=h)
    assert [i["title"] for i in leaving(services="mine").json()["items"]] == ["Heat"]
    r = c.get("/v1/catalog/leaving", params={"services": "mine"})
    assert r.status_code == 401 and r.json()["field"] == "services"
    assert leaving(services="all").status_code == 422


def test_watchlist_pages_with_a_cursor(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)
    for title in ("Toy Story", "Heat", "Jumanji"):
        c.post("/v1/me/watchlist", json={"content_id": cid(c, title)}, headers=h)
    seen: list[str] = []
    params: dict[str, Any] = {"sort": "title", "limit": 2}
    while True:
        body = c.get("/v1/me/watchlist", params=params, headers=h).json()
        seen += [i["title"] for i in body["items"]]
        if not body["next_cursor"]:
            break
        params["cursor"] = body["next_cursor"]
    assert seen == ["Heat", "Jumanji", "Toy Story"]


def test_bad_ops_are_rejected_one_by_one_and_never_fail_the_batch(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)
    toy = cid(c, "Toy Story")
    good = op("watchlist.add", toy)
    ops = [
        good,
        op("watchlist.teleport", toy),
        op("watchlist.add", "no-such-title"),
        {**op("rating.set", toy, {"rating": 5}), "at": at(-600)},  # 10 min in the future
        {"kind": "watchlist.add", "content_id": toy, "at": at()},  # no op id
        good,  # the same op twice in one batch
        {**op("watchlist.add", toy), "at": "1970-01-01T00:00:00Z"},  # a clock never set
    ]
    out = sync(c, h, "phone", ops)
    got = [(r["status"], r.get("field")) for r in out["results"]]
    assert got == [
        ("applied", None),
        ("rejected", "kind"),
        ("rejected", "content_id"),
        ("rejected", "at"),
        ("rejected", "op_id"),
        ("duplicate", None),
        ("rejected", "at"),
    ]
    r = c.post("/v1/sync", json={"device_id": "p", "ops": [good] * 1001}, headers=h)
    assert r.status_code == 413 and r.headers["content-type"].startswith("application/problem")
    r = c.get("/v1/sync", params={"since": "not-a-cursor"}, headers=h)
    assert r.status_code == 400 and r.json()["field"] == "since"
    assert c.get("/v1/sync", headers={}).status_code == 401


def test_another_users_library_is_never_reachable(lib_client: TestClient) -> None:
    c = lib_client
    _, alice = new_user(c)
    _, bob = new_user(c)
    toy = cid(c, "Toy Story")
    c.post("/v1/me/watchlist", json={"content_id": toy}, headers=alice)
    assert watchlist(c, bob) == []
    assert pull(c, bob)["changes"] == []
    # bob cannot remove alice's item either: his removal is his own (a tombstone of his)
    c.delete(f"/v1/me/watchlist/{toy}", headers=bob)
    assert watchlist(c, alice) == ["Toy Story"]


def test_idempotency_key_makes_a_retried_command_a_duplicate(lib_client: TestClient) -> None:
    c = lib_client
    _, h = new_user(c)
    toy = cid(c, "Toy Story")
    key = {"Idempotency-Key": str(uuid.uuid4()), **h}
    first = c.post("/v1/me/watchlist", json={"content_id": toy}, headers=key)
    assert first.json()["status"] == "applied"
    c.delete(f"/v1/me/watchlist/{toy}", headers=h)
    again = c.post("/v1/me/watchlist", json={"content_id": toy}, headers=key)
    assert again.json()["status"] == "duplicate"
    assert watchlist(c, h) == []  # the retry did not bring it back


def test_merged_titles_follow_their_survivor(lib_client: TestClient) -> None:
    from tests.test_resolution import CATALOG_RECORDS, LATE_EVIDENCE, events_of

    c = lib_client
    pub = c.app.state.mgw.publisher  # type: ignore[attr-defined]
    c.portal.call(pub.publish_many, events_of(CATALOG_RECORDS))  # type: ignore[union-attr]

    def ids() -> dict[str, str]:
        rows = _sql(
            c,
            "SELECT platform, content_id FROM platform_titles WHERE (platform, platform_id)"
            " IN (('apple_tv_plus', 't1'), ('paramount_plus', 'm1'))",
        )
        return {p: cid for p, cid in rows}

    deadline = time.monotonic() + 30
    while len(ids()) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    a, b = ids()["apple_tv_plus"], ids()["paramount_plus"]
    assert a != b  # two titles until the IMDb id ties them
    _, h = new_user(c)
    for cid_ in (a, b):
        assert c.post("/v1/me/watchlist", json={"content_id": cid_}, headers=h).status_code == 200
    c.put(f"/v1/me/ratings/{max(a, b)}", json={"rating": 8}, headers=h)
    c.portal.call(pub.publish_many, events_of([LATE_EVIDENCE]))  # type: ignore[union-attr]
    survivor, loser = min(a, b), max(a, b)
    while not _sql(c, "SELECT 1 FROM content_merges WHERE merged_id = %s", loser):
        assert time.monotonic() < deadline + 30
        time.sleep(0.05)
    items = c.get("/v1/me/watchlist", headers=h).json()["items"]
    assert [(i["content_id"], i["title"] is not None) for i in items] == [(survivor, True)]
    ratings = c.get("/v1/me/ratings", headers=h).json()["items"]
    assert [(r["content_id"], r["rating"]) for r in ratings] == [(survivor, 8)]


def test_replay_rebuilds_the_library_identically(lib_client: TestClient) -> None:
    """After the others (every kind of change is in the log), before the purge."""
    from projections import maintenance
    from projections.registry import by_name
    from streams.processing import ProjectionPipeline
    from streams.runner import ProjectorLoop

    c = lib_client
    mgw = c.app.state.mgw  # type: ignore[attr-defined]
    library = by_name("library")

    async def replay() -> tuple[str, int, str]:
        before = await maintenance.checksum(mgw.stores, library)
        await maintenance.clear(mgw.stores, library)
        loop = ProjectorLoop(
            ProjectionPipeline(library, mgw.stores, mgw.log, dead_letters=False),
            mgw.log,
            linger_ms=0,
        )
        applied = await loop.catch_up()
        return before, applied, await maintenance.checksum(mgw.stores, library)

    before, applied, after = c.portal.call(replay)  # type: ignore[union-attr]
    assert applied > 20
    assert after == before


def test_old_cursors_answer_410_after_the_tombstones_are_purged(lib_client: TestClient) -> None:
    """Last: the purge forgets every removal older than a day from now."""
    from projections.library import purge_tombstones

    c = lib_client
    _, h = new_user(c)
    toy = cid(c, "Toy Story")
    c.post("/v1/me/watchlist", json={"content_id": toy}, headers=h)
    old = pull(c, h)["cursor"]
    c.delete(f"/v1/me/watchlist/{toy}", headers=h)
    mgw = c.app.state.mgw  # type: ignore[attr-defined]

    async def purge() -> int:
        async with mgw.stores.pg.connection() as conn:
            return await purge_tombstones(conn, datetime.now(UTC) + timedelta(days=1))

    assert c.portal.call(purge) >= 1  # type: ignore[union-attr]
    r = c.get("/v1/sync", params={"since": old}, headers=h)
    assert r.status_code == 410 and "resync" in r.json()["detail"]
    # a full resync starts empty, so it needs no removal, and its cursor stays good
    fresh = Device("new-phone")
    fresh.pull(c, h)
    assert fresh.watchlist() == set()
    sync(c, h, "phone", [op("watchlist.add", toy)])
    fresh.pull(c, h)
    assert fresh.watchlist() == {toy}
