"""A dependency down, over real sockets: the API answers 503 with Retry-After and keeps
the client's connection, as it would for any other answer."""

from __future__ import annotations

import http.client
import json
from pathlib import Path

from core.settings import Settings
from tests.conftest import TEST_IDENTITY
from tests.live_server import LiveServer


def test_a_503_for_redis_down_keeps_the_keep_alive_connection(db_uri: str, tmp_path: Path) -> None:
    # Found by the chaos harness (docs/reliability.md): while Redis restarted under load,
    # clients reusing keep-alive connections saw them reset instead of reading the 503,
    # because the error escaped to the outermost middleware and uvicorn dropped the socket.
    from mgw import embedded
    from mgw.app import create_app

    rd = embedded.start_redis(tmp_path / "own-redis")  # this test stops it: not the shared one
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=db_uri,
        redis_url=rd.url,
        batch_linger_ms=0,
        identity=TEST_IDENTITY,
    )
    app = create_app(settings, run_projectors=False)
    try:
        with LiveServer(app) as server:
            token = app.state.mgw.identity.user_token("outage-user", "playback", ttl_s=600)
            headers = {"Authorization": f"Bearer {token}"}
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
            conn.request("GET", "/v1/me/continue-watching", headers=headers)
            ok = conn.getresponse()
            ok.read()
            assert ok.status == 200
            sock = conn.sock
            rd.stop()
            for _ in range(3):
                conn.request("GET", "/v1/me/continue-watching", headers=headers)
                r = conn.getresponse()
                body = json.loads(r.read())
                assert r.status == 503, body
                assert r.getheader("Retry-After")
                assert "redis" in body["detail"].lower()
                # the same socket each time: the server neither closed nor reset it
                assert r.getheader("Connection", "").lower() != "close"
                assert conn.sock is sock
            conn.close()
    finally:
        rd.stop()
