"""Realtime end to end: two API processes' worth of apps behind real uvicorn servers on
one PostgreSQL and one Redis, devices on real WebSockets (``websockets`` clients).

The first server runs the projectors (as ``mgw up`` does); the second only serves, as a
fleet's extra API process would, so a push it delivers crossed Redis.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import psycopg
import pytest
import redis as sync_redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from core.codec import default_codec
from core.fanout import channel
from core.settings import Settings
from tests.live_server import LiveServer
from tests.test_notifications import netflix as netflix_feed
from tests.test_search import SECRET
from tests.test_search import _deliver as deliver
from tests.test_search import _nf as netflix_title

PASSWORD = "correct horse battery staple"


class Fleet:
    def __init__(self, one: LiveServer, two: LiveServer, db_uri: str, redis_url: str) -> None:
        self.one, self.two = one, two
        self.db_uri = db_uri
        self.redis_url = redis_url

    def sql(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.db_uri, autocommit=True) as conn:
            return conn.execute(sql, args).fetchall()

    def title(self, name: str) -> str:
        rows = self.sql("SELECT content_id FROM content WHERE title = %s", name)
        assert rows, name
        return str(rows[0][0])


def _settings(tmp: Any, db_uri: str, redis_url: str, **extra: Any) -> Settings:
    from tests.conftest import TEST_IDENTITY

    # one fleet, one key directory: a token either process issued, both verify
    identity = replace(TEST_IDENTITY, keys_dir=tmp.parent / "keys")
    return Settings(
        data_dir=tmp / "data",
        database_url=db_uri,
        redis_url=redis_url,
        batch_linger_ms=0,
        webhook_secrets=(("netflix", SECRET),),
        identity=identity,
        search_indexer=False,
        embeddings="none",
        **extra,
    )


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, services: Any) -> Iterator[Fleet]:
    from mgw.app import create_app

    name = f"realtime_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    db_uri = services.db_uri(name)
    redis_url = f"unix://{services.redis_socket}?db=12"
    tmp = tmp_path_factory.mktemp("realtime")
    # short idle timeout and command deadline, so the tests see both without waiting long
    one = create_app(_settings(tmp / "one", db_uri, redis_url, ws_idle_s=4.0))
    two = create_app(_settings(tmp / "two", db_uri, redis_url, ws_idle_s=4.0), run_projectors=False)
    with LiveServer(one) as s1, LiveServer(two) as s2:
        f = Fleet(s1, s2, db_uri, redis_url)
        with httpx.Client(base_url=s1.http, timeout=30) as http:
            deliver(http, "netflix", {"titles": [
                netflix_title(201, "Toy Story", 1995, "tt0114709"),
                netflix_title(202, "Heat", 1995, "tt0113277"),
                netflix_title(203, "Jumanji", 1995, "tt0113497"),
            ]})  # fmt: skip
        deadline = time.monotonic() + 60
        while f.sql("SELECT count(*) FROM content")[0][0] < 3:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        yield f


def _user(f: Fleet) -> tuple[str, str, dict[str, str]]:
    """A new account, signed in: (user id, access token, headers)."""
    email = f"rt.{uuid.uuid4().hex[:10]}@example.com"
    with httpx.Client(base_url=f.one.http, timeout=30) as http:
        r = http.post(
            "/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "Viewer"},
        )
        assert r.status_code == 201, r.text
        t = http.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "mgw-app",
                "username": email,
                "password": PASSWORD,
            },
        )
        assert t.status_code == 200, t.text
    token = t.json()["access_token"]
    return r.json()["id"], token, {"Authorization": f"Bearer {token}"}


def _sign_in_again(f: Fleet, headers: dict[str, str]) -> str:
    """A second sign-in (another device) of the account behind ``headers``."""
    with httpx.Client(base_url=f.one.http, timeout=30) as http:
        me = http.get("/v1/me", headers=headers).json()
        t = http.post(
            "/oauth/token",
            data={
                "grant_type": "password",
                "client_id": "mgw-app",
                "username": me["email"],
                "password": PASSWORD,
            },
        )
        assert t.status_code == 200, t.text
    return str(t.json()["access_token"])


async def _socket(server: LiveServer, token: str, **params: str) -> ClientConnection:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    ws = await connect(f"{server.ws}/v1/ws?{query}", subprotocols=["bearer", token])  # type: ignore[list-item]
    hello = await _next(ws, "hello")
    assert hello["device_id"] == params.get("device_id", hello["device_id"])
    return ws


async def _next(ws: ClientConnection, kind: str, timeout: float = 15) -> dict[str, Any]:
    """The next frame of ``kind`` (frames of other kinds before it are passed over)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == kind:
                return frame  # type: ignore[no-any-return]


async def _frames(ws: ClientConnection, kind: str, quiet_s: float = 1.0) -> list[dict[str, Any]]:
    """Every frame of ``kind`` until the socket has been quiet for ``quiet_s``."""
    out = []
    while True:
        try:
            frame = json.loads(await asyncio.wait_for(ws.recv(), quiet_s))
        except TimeoutError:
            return out
        if frame["type"] == kind:
            out.append(frame)


async def _closed(ws: ClientConnection, timeout: float = 15) -> tuple[int | None, str]:
    async with asyncio.timeout(timeout):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), (exc.rcvd.reason if exc.rcvd else "")


async def test_two_devices_on_two_api_processes_see_each_others_changes(fleet: Fleet) -> None:
    f = fleet
    _, token, h = _user(f)
    toy, heat = f.title("Toy Story"), f.title("Heat")
    phone = await _socket(f.one, token, device_id="phone")
    tv = await _socket(f.two, token, device_id="tv")
    try:
        async with httpx.AsyncClient(base_url=f.one.http, timeout=30) as http:
            r = await http.post(
                "/v1/me/watchlist", json={"content_id": toy}, headers={**h, "X-Device-Id": "phone"}
            )
            assert r.status_code == 200, r.text
            # the TV is on the API process that runs no projector: the push crossed Redis
            on_tv = await _next(tv, "library")
            assert [(c["entity"], c["content_id"], c["device_id"]) for c in on_tv["changes"]] == [
                ("watchlist", toy, "phone")
            ]
            on_phone = await _next(phone, "library")
            assert on_phone["cursor"] == on_tv["cursor"]
            # the cursor a push carries is a sync cursor: nothing after it yet
            later = await http.get("/v1/sync", params={"since": on_tv["cursor"]}, headers=h)
            assert later.json()["changes"] == []

            # the TV plays; the phone hears the position
            r = await http.post(
                "/v1/playback/events",
                json={"content_id": heat, "device_id": "tv", "kind": "progress",
                      "position_s": 600.0, "duration_s": 6000.0},
                headers=h,
            )  # fmt: skip
            assert r.status_code in (200, 202), r.text
            played = await _next(phone, "playback")
            assert (played["content_id"], played["position_s"], played["device_id"]) == (
                heat,
                600.0,
                "tv",
            )
    finally:
        await phone.close()
        await tv.close()


async def test_a_device_that_reconnects_with_its_cursor_misses_nothing(fleet: Fleet) -> None:
    f = fleet
    _, token, h = _user(f)
    toy, heat, jumanji = (f.title(t) for t in ("Toy Story", "Heat", "Jumanji"))
    tv = await _socket(f.two, token, device_id="tv")
    async with httpx.AsyncClient(base_url=f.one.http, timeout=30) as http:

        async def add(cid: str) -> None:
            r = await http.post("/v1/me/watchlist", json={"content_id": cid}, headers=h)
            assert r.status_code == 200, r.text

        await add(toy)
        first = await _next(tv, "library")
        cursor = first["cursor"]
        await tv.close()  # the socket drops mid-stream
        await add(heat)
        r = await http.put(f"/v1/me/ratings/{toy}", json={"rating": 8}, headers=h)
        assert r.status_code == 200, r.text
        await add(jumanji)

        tv = await _socket(f.two, token, device_id="tv", since=cursor)
        try:
            got = await _frames(tv, "library")
            changes = [(c["entity"], c["content_id"]) for fr in got for c in fr["changes"]]
            # each missed change once, in order, and nothing it had already
            assert changes == [("watchlist", heat), ("rating", toy), ("watchlist", jumanji)]
            pulled = await http.get("/v1/sync", params={"since": cursor}, headers=h)
            assert [(c["entity"], c["content_id"]) for c in pulled.json()["changes"]] == changes
            assert got[-1]["cursor"] == pulled.json()["cursor"]
            # live again after catching up
            await http.delete(f"/v1/me/watchlist/{heat}", headers=h)
            live = await _next(tv, "library")
            assert [(c["content_id"], c["deleted"]) for c in live["changes"]] == [(heat, True)]
        finally:
            await tv.close()


async def test_a_lost_push_is_read_back_from_the_feed(fleet: Fleet) -> None:
    """A push that skips ahead of the socket's position (its predecessor was lost) makes
    the hub read the gap from the sync feed instead of forwarding a hole."""
    f = fleet
    user, token, h = _user(f)
    toy, heat = f.title("Toy Story"), f.title("Heat")
    tv = await _socket(f.two, token, device_id="tv")
    try:
        async with httpx.AsyncClient(base_url=f.one.http, timeout=30) as http:
            await http.post("/v1/me/watchlist", json={"content_id": toy}, headers=h)
            await _next(tv, "library")
            await http.post("/v1/me/watchlist", json={"content_id": heat}, headers=h)
            await _next(tv, "library")
        # a push for positions 5..6 while the socket is at 2: 3 and 4 never arrived
        r = sync_redis.Redis.from_url(f.redis_url)
        r.publish(
            channel(user),
            json.dumps({"type": "library", "from_seq": 5, "seq": 6, "changes": []}),
        )
        r.close()
        # nothing past position 2 exists, so the read-back sends nothing and no hole
        assert await _frames(tv, "library") == []
    finally:
        await tv.close()


def _on_watchlist_in_gb_only(f: Fleet, h: dict[str, str]) -> str:
    """A title streaming in GB only, on the watchlist of a US Netflix subscriber."""
    with httpx.Client(base_url=f.one.http, timeout=30) as http:
        deliver(http, "netflix", netflix_feed(204, "Arrival", "tt2543164", ("GB",)))
        deadline = time.monotonic() + 60
        while not f.sql("SELECT 1 FROM content WHERE title = 'Arrival'"):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        arrival = f.title("Arrival")
        r = http.put("/v1/me/services", json={"region": "US", "platforms": ["netflix"]}, headers=h)
        assert r.status_code in (200, 202), r.text
        r = http.post("/v1/me/watchlist", json={"content_id": arrival}, headers=h)
        assert r.status_code == 200, r.text
    return arrival


def _lands_in_us(f: Fleet) -> None:
    with httpx.Client(base_url=f.one.http, timeout=30) as http:
        deliver(http, "netflix", netflix_feed(204, "Arrival", "tt2543164", ("GB", "US")))


async def test_a_watchlist_title_landing_on_my_service_is_pushed_and_listed(fleet: Fleet) -> None:
    f = fleet
    _, token, h = _user(f)
    arrival = _on_watchlist_in_gb_only(f, h)
    phone = await _socket(f.two, token, device_id="phone")
    try:
        _lands_in_us(f)
        pushed = (await _next(phone, "notification", timeout=30))["notification"]
        assert (pushed["kind"], pushed["content_id"]) == ("available", arrival)
        listed = await _get(f, "/v1/me/notifications", h)
        assert [i["id"] for i in listed["items"]] == [pushed["id"]]
        assert listed["unread_count"] == 1
        assert await _frames(phone, "notification") == []  # once
    finally:
        await phone.close()


async def test_tokens_the_socket_refuses_close_it_with_policy_violation(fleet: Fleet) -> None:
    f = fleet
    for url in (f"{f.one.ws}/v1/ws", f"{f.one.ws}/v1/ws?access_token=not-a-jwt"):
        ws = await connect(url)
        code, reason = await _closed(ws)
        assert code == 1008, (url, code, reason)
        assert "token" in reason or "sign in" in reason


async def test_revoking_the_session_closes_its_socket(fleet: Fleet) -> None:
    f = fleet
    _, token, h = _user(f)
    ws = await _socket(f.two, token)  # accepted with the bearer subprotocol
    assert ws.subprotocol == "bearer"
    async with httpx.AsyncClient(base_url=f.one.http, timeout=30) as http:
        devices = (await http.get("/v1/me/devices", headers=h)).json()["items"]
        mine = [d for d in devices if d["current"]][0]
        assert mine["online"] and mine["sockets"][0]["device_id"] == mine["id"]
        r = await http.delete(f"/v1/me/devices/{mine['id']}", headers=h)
        assert r.status_code == 204
    code, reason = await _closed(ws)
    assert (code, "revoked" in reason) == (1008, True)


async def test_a_silent_device_is_closed_and_a_pinging_one_is_not(fleet: Fleet) -> None:
    f = fleet
    _, token, _ = _user(f)
    silent = await _socket(f.one, token, device_id="silent")
    chatty = await _socket(f.one, token, device_id="chatty")
    try:
        for _ in range(6):  # 6 s of pings every second, past the 4 s idle timeout
            await chatty.send(json.dumps({"type": "ping", "at": 1}))
            assert (await _next(chatty, "pong"))["at"] == 1
            await asyncio.sleep(1)
        code, reason = await _closed(silent)
        assert code == 4408, reason
        # a malformed frame is answered, not fatal
        await chatty.send("{not json")
        err = await _next(chatty, "error")
        assert err["field"] == "frame"
        await chatty.send(json.dumps({"type": "teleport"}))
        assert (await _next(chatty, "error"))["field"] == "type"
        await chatty.send(json.dumps({"type": "ping"}))
        await _next(chatty, "pong")
    finally:
        await chatty.close()


async def test_a_fresh_token_keeps_the_socket_and_another_users_token_closes_it(
    fleet: Fleet,
) -> None:
    f = fleet
    _, token, h = _user(f)
    _, stranger, _ = _user(f)
    ws = await _socket(f.one, token, device_id="tablet")
    fresh = _sign_in_again(f, h)
    await ws.send(json.dumps({"type": "auth", "access_token": fresh}))
    assert (await _next(ws, "auth"))["token_expires_at"] > 0
    await ws.send(json.dumps({"type": "auth", "access_token": stranger}))
    code, reason = await _closed(ws)
    assert (code, reason) == (1008, "another user")


async def test_a_command_reaches_its_device_is_acknowledged_and_reported(fleet: Fleet) -> None:
    f = fleet
    _, token, h = _user(f)
    remote_token = _sign_in_again(f, h)
    toy = f.title("Toy Story")
    tv = await _socket(f.two, token, device_id="tv")
    remote = await _socket(f.one, remote_token, device_id="remote")
    rh = {"Authorization": f"Bearer {remote_token}"}
    try:
        async with httpx.AsyncClient(base_url=f.one.http, timeout=30) as http:
            r = await http.post(
                "/v1/me/devices/tv/commands",
                json={"command": "play", "content_id": toy, "position_s": 42.0},
                headers=rh,
            )
            assert r.status_code == 202, r.text
            cid = r.json()["command_id"]
            token_header = {"X-Consistency-Token": r.headers["X-Consistency-Token"]}
            cmd = await _next(tv, "command")
            assert (cmd["command_id"], cmd["command"], cmd["content_id"], cmd["position_s"]) == (
                cid,
                "play",
                toy,
                42.0,
            )
            await tv.send(json.dumps({"type": "ack", "command_id": cid}))
            # the sender hears the outcome without polling
            while (status := await _next(remote, "command.status"))["status"] != "acked":
                assert status["command_id"] == cid
            got = await http.get(f"/v1/me/commands/{cid}", headers={**rh, **token_header})
            assert got.json()["status"] == "acked"
            assert got.json()["delivered_at"] <= got.json()["acked_at"]
            # the story is on the log (audit): issued, delivered, acknowledged
            assert _story(f, cid) == [
                "DeviceCommandIssued",
                "DeviceCommandDelivered",
                "DeviceCommandAcked",
            ]

            # another user's device is 404; so is another user's command
            _, _, other = _user(f)
            r = await http.post(
                "/v1/me/devices/tv/commands", json={"command": "pause"}, headers=other
            )
            assert r.status_code == 404 and r.json()["field"] == "device_id"
            r = await http.get(f"/v1/me/commands/{cid}", headers=other)
            assert r.status_code == 404
            r = await http.post("/v1/me/devices/tv/commands", json={"command": "seek"}, headers=h)
            assert r.status_code == 422 and r.json()["field"] == "position_s"
            r = await http.post("/v1/me/devices/tv/commands", json={"command": "rewind"}, headers=h)
            assert r.status_code == 422 and r.json()["field"] == "command"
    finally:
        await tv.close()
        await remote.close()


async def test_a_command_for_an_offline_device_waits_then_expires(fleet: Fleet) -> None:
    f = fleet
    _, token, h = _user(f)
    me = (await _get(f, "/v1/me/devices", h))["items"][0]["id"]  # the sign-in is a device
    async with httpx.AsyncClient(base_url=f.one.http, timeout=30) as http:
        r = await http.post(f"/v1/me/devices/{me}/commands", json={"command": "pause"}, headers=h)
        assert r.status_code == 202, r.text
        waiting = r.json()["command_id"]
        r = await http.post(
            f"/v1/me/devices/{me}/commands", json={"command": "stop", "ttl_s": 1}, headers=h
        )
        short = r.json()["command_id"]
        await asyncio.sleep(1.5)
        # the device comes on: the command still in time is delivered, the late one not
        ws = await _socket(f.two, token)
        try:
            cmd = await _next(ws, "command")
            assert cmd["command_id"] == waiting
            assert await _frames(ws, "command") == []
        finally:
            await ws.close()
        deadline = time.monotonic() + 15
        while True:
            status = (await http.get(f"/v1/me/commands/{short}", headers=h)).json()["status"]
            stored = f.sql("SELECT status FROM device_commands WHERE command_id = %s", short)
            if status == "expired" and stored == [("expired",)]:
                break  # the sweeper's DeviceCommandExpired was folded
            assert time.monotonic() < deadline, (status, stored)
            await asyncio.sleep(0.2)


def _story(f: Fleet, command_id: str) -> list[str]:
    codec = default_codec()
    out = []
    for (value,) in f.sql(
        "SELECT value FROM log_records WHERE topic = 'realtime.commands'"
        ' ORDER BY appended_at, "offset"'
    ):
        event_type, payload = codec.decode(bytes(value))
        if payload["command_id"] == command_id:
            out.append(event_type)
    return out


async def _get(f: Fleet, path: str, h: dict[str, str]) -> Any:
    async with httpx.AsyncClient(base_url=f.one.http, timeout=30) as http:
        r = await http.get(path, headers=h)
        assert r.status_code == 200, r.text
        return r.json()
