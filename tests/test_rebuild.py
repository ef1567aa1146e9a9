"""Blue/green rebuilds against a running app: readers loop through the API the whole
time and never see an error or an empty answer; the switched-in version has the same
checksum, keeps projecting afterwards, and an as-of copy holds only what the log held."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from mgw.rebuild import run_rebuild
from tests.identity_helpers import admin_headers, new_user
from tests.test_search import SECRET
from tests.test_search import _deliver as deliver
from tests.test_search import _nf as netflix_title

TITLES = [(301 + i, f"Rebuild Title {i}", 1990 + i, f"tt93{i:05d}") for i in range(12)]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory, services: Any) -> Iterator[TestClient]:
    from mgw.app import create_app
    from tests.conftest import TEST_IDENTITY

    name = f"rebuild_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("rebuild") / "data",
        database_url=services.db_uri(name),
        redis_url=f"unix://{services.redis_socket}?db=11",
        batch_linger_ms=0,
        webhook_secrets=(("netflix", SECRET),),
        identity=TEST_IDENTITY,
        search_indexer=False,
        embeddings="none",
    )
    import redis

    # db 11 is also handed out by the redis_url fixture: keys an earlier test left would
    # count in the playback checksum before the switch and be swept after it
    r = redis.Redis(unix_socket_path=services.redis_socket, db=11)
    r.flushdb()
    r.close()
    with TestClient(create_app(settings)) as c:
        c.app.state.settings = settings  # type: ignore[attr-defined]
        deliver(c, "netflix", {"titles": [netflix_title(*t) for t in TITLES]})
        deadline = time.monotonic() + 60
        while len(_sql(c, "SELECT content_id FROM content")) < len(TITLES):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield c


def _sql(c: TestClient, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    uri = c.app.state.settings.database_url  # type: ignore[attr-defined]
    with psycopg.connect(uri, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def _titles(c: TestClient) -> list[str]:
    return [r[0] for r in _sql(c, "SELECT content_id FROM content ORDER BY title")]


class Reader:
    """Loops GETs from a thread until stopped; every answer is recorded."""

    def __init__(self, c: TestClient, paths: list[str], headers: dict[str, str]) -> None:
        self.c, self.paths, self.headers = c, paths, headers
        self.answers: list[tuple[str, int, int]] = []  # (path, status, items)
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for path in self.paths:
                r = self.c.get(path, headers=self.headers)
                items = len(r.json().get("items", [])) if r.status_code == 200 else -1
                self.answers.append((path, r.status_code, items))
                self.times.append(time.monotonic())

    def __enter__(self) -> Reader:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _rebuild(c: TestClient, name: str, **kw: Any) -> int:
    settings = replace(c.app.state.settings, data_dir=c.app.state.settings.data_dir)  # type: ignore[attr-defined]
    return asyncio.run(run_rebuild(settings, name, progress=False, grace_s=1.0, **kw))


def test_a_library_rebuild_switches_with_no_failed_or_empty_read(app: TestClient) -> None:
    c = app
    _, h = new_user(c)
    titles = _titles(c)
    for cid in titles[:8]:
        assert c.post("/v1/me/watchlist", json={"content_id": cid}, headers=h).status_code == 200
    r = c.put(f"/v1/me/ratings/{titles[0]}", json={"rating": 9}, headers=h)
    assert r.status_code == 200
    before = c.get("/v1/me/watchlist", headers=h).json()["items"]
    assert len(before) == 8

    with Reader(c, ["/v1/me/watchlist", "/v1/me/ratings"], h) as reader:
        time.sleep(0.3)
        t0 = time.monotonic()
        assert _rebuild(c, "library") == 0
        t1 = time.monotonic()
        time.sleep(0.3)
    # reads ran before, during and after the rebuild
    assert min(reader.times) < t0 and max(reader.times) > t1
    assert sum(t0 <= t <= t1 for t in reader.times) > 5
    bad = [a for a in reader.answers if a[1] != 200 or a[2] == 0]
    assert bad == [], bad[:5]

    [row] = _sql(
        c,
        "SELECT state, checksum_before, checksum_after, records_done, records_total"
        " FROM projection_rebuilds WHERE projector = 'library'",
    )
    assert row[0] == "done" and row[1] == row[2] and row[3] >= 9
    # nothing of the old or the building version is left behind
    assert _sql(c, "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'mgw_%%'") == []
    # the switched-in tables keep projecting
    assert c.post("/v1/me/watchlist", json={"content_id": titles[9]}, headers=h).status_code == 200
    after = c.get("/v1/me/watchlist", headers=h).json()["items"]
    assert {i["content_id"] for i in after} == {i["content_id"] for i in before} | {titles[9]}

    # the admin view of it
    admin = admin_headers(c)
    listed = c.get("/v1/admin/rebuilds", params={"projector": "library"}, headers=admin).json()
    [item] = listed["items"]
    assert (item["state"], item["kind"], item["progress"]) == ("done", "blue_green", 1.0)
    one = c.get(f"/v1/admin/rebuilds/{item['rebuild_id']}", headers=admin)
    assert one.json()["checksum_after"] == row[2]
    assert c.get("/v1/admin/rebuilds", headers=h).status_code == 403


def test_a_playback_rebuild_keeps_continue_watching_answering(app: TestClient) -> None:
    c = app
    _, h = new_user(c)
    titles = _titles(c)
    for i, cid in enumerate(titles[:6]):
        r = c.post(
            "/v1/playback/events",
            json={"content_id": cid, "device_id": "tv", "kind": "progress",
                  "position_s": 600.0 + i, "duration_s": 6000.0},
            headers=h,
        )  # fmt: skip
        assert r.status_code == 202, r.text
    token = r.headers["X-Consistency-Token"]
    cw = c.get("/v1/me/continue-watching", headers={**h, "X-Consistency-Token": token})
    assert len(cw.json()["items"]) == 6

    with Reader(c, ["/v1/me/continue-watching"], h) as reader:
        time.sleep(0.3)
        assert _rebuild(c, "playback") == 0
        time.sleep(0.3)
    bad = [a for a in reader.answers if a[1] != 200 or a[2] != 6]
    assert reader.answers and bad == [], bad[:5]
    [(before, after)] = _sql(
        c,
        "SELECT checksum_before, checksum_after FROM projection_rebuilds"
        " WHERE projector = 'playback'",
    )
    assert before == after  # rows and Redis alike


def test_an_as_of_copy_holds_what_the_log_held_then_and_is_never_switched(
    app: TestClient,
) -> None:
    c = app
    uid, h = new_user(c)
    titles = _titles(c)
    assert c.post("/v1/me/watchlist", json={"content_id": titles[0]}, headers=h).status_code == 200
    time.sleep(0.05)
    then = datetime.now(UTC).isoformat()
    time.sleep(0.05)
    r = c.post("/v1/me/watchlist", json={"content_id": titles[1]}, headers=h)
    assert r.status_code == 200
    assert _rebuild(c, "library", until=then) == 0
    [(schema, state)] = _sql(
        c,
        "SELECT schema_name, state FROM projection_rebuilds WHERE kind = 'as_of'"
        " ORDER BY started_at DESC LIMIT 1",
    )
    assert state == "as_of_ready"
    as_of = _sql(
        c,
        f"SELECT key FROM {schema}.library_items WHERE user_id = %s AND entity = 'watchlist'",
        uid,
    )
    assert as_of == [(titles[0],)]
    live = _sql(
        c,
        "SELECT key FROM library_items WHERE user_id = %s AND entity = 'watchlist' ORDER BY key",
        uid,
    )
    assert sorted(k for (k,) in live) == sorted(titles[:2])
    uri = c.app.state.settings.database_url  # type: ignore[attr-defined]
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_projectors_it_cannot_version_are_refused_with_what_to_do(app: TestClient) -> None:
    assert _rebuild(app, "search") == 2  # vectors outside PostgreSQL
    assert _rebuild(app, "catalog") == 2  # triggers on its tables
    assert _rebuild(app, "nope") == 2
