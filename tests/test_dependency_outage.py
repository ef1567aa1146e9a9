"""A dependency down, over real sockets: what still can be served is served and says so
(``degraded``); what cannot answers 503 with Retry-After and keeps the client's
connection, as it would for any other answer."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from mgw.embedded import EmbeddedRedis
from tests.conftest import TEST_IDENTITY
from tests.live_server import LiveServer


class Api:
    def __init__(self, port: int, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(
        self, method: str, path: str, body: Any = None, **headers: str
    ) -> tuple[int, dict[str, str], Any]:
        data = json.dumps(body) if body is not None else None
        self.conn.request(method, path, body=data, headers={**self.headers, **headers})
        r = self.conn.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, json.loads(r.read() or b"{}")


@pytest.fixture
def served(db_uri: str, tmp_path: Path) -> Iterator[tuple[Api, EmbeddedRedis]]:
    """The app behind real uvicorn on its own Redis (the test stops it: not the shared one)."""
    from mgw import embedded
    from mgw.app import create_app

    rd = embedded.start_redis(tmp_path / "own-redis")
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_uri,
        redis_url=rd.url,
        batch_linger_ms=0,
        identity=TEST_IDENTITY,
    )
    app = create_app(settings)
    try:
        with LiveServer(app) as server:
            token = app.state.mgw.identity.user_token("outage-user", "playback", ttl_s=600)
            api = Api(server.port, token)
            yield api, rd
            api.conn.close()
    finally:
        rd.stop()


def _stop(rd: EmbeddedRedis) -> None:
    """Redis goes away under the running app (SIGTERM: it saves and exits)."""
    import psutil

    proc = psutil.Process(rd.server.pid)
    proc.terminate()
    proc.wait(30)


def _progress(api: Api, content: str, pos: float) -> str:
    status, headers, _ = api.call(
        "POST",
        "/v1/playback/events",
        {"content_id": content, "device_id": "tv", "kind": "progress",
         "position_s": pos, "duration_s": 3600},
    )  # fmt: skip
    assert status == 202
    return headers["x-consistency-token"]


def test_continue_watching_is_served_from_postgres_while_redis_is_down(
    served: tuple[Api, EmbeddedRedis],
) -> None:
    api, rd = served
    for i in range(5):
        token = _progress(api, f"outage-{i}", 600 + i)
    _progress(api, "outage-finished", 3590)  # watched: never in continue-watching
    token = _progress(api, "outage-0", 900)  # moves to the front
    status, _, live = api.call("GET", "/v1/me/continue-watching?limit=2",
                               **{"X-Consistency-Token": token})  # fmt: skip
    assert status == 200 and live["degraded"] is False
    pages = [live]
    while pages[-1]["next_cursor"]:
        status, _, page = api.call(
            "GET", f"/v1/me/continue-watching?limit=2&cursor={pages[-1]['next_cursor']}"
        )
        pages.append(page)
    from_redis = [i for p in pages for i in p["items"]]
    assert [i["content_id"] for i in from_redis][:2] == ["outage-0", "outage-4"]
    assert len(from_redis) == 5

    _stop(rd)
    degraded = []
    cursor = None
    while True:
        path = "/v1/me/continue-watching?limit=2" + (f"&cursor={cursor}" if cursor else "")
        status, _, page = api.call("GET", path)
        assert status == 200, page
        assert page["degraded"] is True
        degraded += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    # the same items, order, positions and pages as Redis gave
    assert degraded == from_redis


def test_a_503_for_redis_down_keeps_the_keep_alive_connection(
    served: tuple[Api, EmbeddedRedis],
) -> None:
    # Found by the chaos harness (docs/reliability.md): while Redis restarted under load,
    # clients reusing keep-alive connections saw them reset instead of reading the 503,
    # because the error escaped to the outermost middleware and uvicorn dropped the socket.
    api, rd = served
    status, _, _ = api.call("GET", "/v1/me/continue-watching")
    assert status == 200
    sock = api.conn.sock
    _stop(rd)
    for _ in range(3):
        # a device that is not a sign-in of mine is looked up among live sockets, in Redis
        status, headers, body = api.call(
            "POST", "/v1/me/devices/not-signed-in/commands", {"command": "pause"}
        )
        assert status == 503, body
        assert headers.get("retry-after")
        assert "redis" in body["detail"].lower()
        # the same socket each time: the server neither closed nor reset it
        assert headers.get("connection", "").lower() != "close"
        assert api.conn.sock is sock
