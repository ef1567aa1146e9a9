"""Streaming sessions end to end: the limit decided by the projector, heartbeats, expiry
as an event from the sweeper, and the admin's per-account limit."""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from tests.identity_helpers import new_user


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    return replace(settings, heartbeat_s=0.4, max_streams=2)


def start(c: TestClient, h: dict[str, str], device: str, title: str = "t1") -> Any:
    return c.post(
        "/v1/playback/sessions",
        json={"content_id": title, "device_id": device, "duration_s": 6000},
        headers=h,
    )


def test_the_stream_past_the_limit_is_refused_naming_the_devices(client: TestClient) -> None:
    _, h = new_user(client)
    tv, phone = start(client, h, "tv"), start(client, h, "phone")
    assert tv.status_code == phone.status_code == 201, (tv.text, phone.text)
    third = start(client, h, "tablet")
    assert third.status_code == 409, third.text
    body = third.json()
    assert "tv" in body["detail"] and "phone" in body["detail"]
    assert {s["device_id"] for s in body["active"]} == {"tv", "phone"}
    # stopping one frees a stream
    sid = tv.json()["session_id"]
    r = client.post(f"/v1/playback/sessions/{sid}/stop", json={"position_s": 60}, headers=h)
    assert r.status_code == 202, r.text
    assert start(client, h, "tablet").status_code == 201
    # a stopped session takes no more heartbeats; someone else's is not found
    r = client.post(f"/v1/playback/sessions/{sid}/heartbeat", json={"position_s": 70}, headers=h)
    assert r.status_code == 409
    _, other = new_user(client)
    live = phone.json()["session_id"]
    r = client.post(
        f"/v1/playback/sessions/{live}/heartbeat", json={"position_s": 1}, headers=other
    )
    assert r.status_code == 404


def test_a_session_without_heartbeats_ends_by_itself(client: TestClient) -> None:
    _, h = new_user(client)
    kept = start(client, h, "tv").json()["session_id"]
    start(client, h, "phone")
    deadline = time.monotonic() + 20
    # the TV keeps beating; the phone goes quiet and its session expires (an event)
    while True:
        r = client.post(
            f"/v1/playback/sessions/{kept}/heartbeat", json={"position_s": 100}, headers=h
        )
        assert r.status_code == 202, r.text
        devices = {
            s["device_id"] for s in client.get("/v1/playback/sessions", headers=h).json()["items"]
        }
        if devices == {"tv"}:
            break
        assert time.monotonic() < deadline, devices
        time.sleep(0.1)
    ends = client.app.state.mgw  # type: ignore[attr-defined]

    async def expired() -> int:
        async with ends.stores.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM playback_sessions WHERE end_reason = 'expired'"
            )
            row = await cur.fetchone()
            return int(row[0])

    assert client.portal.call(expired) >= 1  # type: ignore[union-attr]
    assert start(client, h, "phone").status_code == 201  # the freed stream


def test_an_admin_sets_an_accounts_own_limit(client: TestClient, admin: dict[str, str]) -> None:
    uid, h = new_user(client)
    r = client.put(f"/v1/admin/users/{uid}/stream-limit", json={"max_streams": 1}, headers=admin)
    assert r.status_code == 200, r.text
    assert start(client, h, "tv").status_code == 201
    assert start(client, h, "phone").status_code == 409
    r = client.put(f"/v1/admin/users/{uid}/stream-limit", json={"max_streams": 0}, headers=admin)
    assert r.status_code == 422 and r.json()["field"] == "max_streams"
    r = client.put(f"/v1/admin/users/{uid}/stream-limit", json={"max_streams": 3}, headers=h)
    assert r.status_code == 403


def test_devices_show_what_plays_where_and_removing_one_signs_it_out(
    client: TestClient,
) -> None:
    from tests.identity_helpers import PASSWORD, bearer, password_login

    email = "devices.owner@example.com"
    r = client.post(
        "/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": "Dee"}
    )
    assert r.status_code == 201, r.text
    tv_tokens = password_login(client, email, PASSWORD, device_name="Living room TV").json()
    phone_tokens = password_login(client, email, PASSWORD, device_name="Phone").json()
    tv, phone = bearer(tv_tokens), bearer(phone_tokens)
    assert start(client, tv, "tv-1", "some-title").status_code == 201

    def devices(h: dict[str, str]) -> dict[str, Any]:
        r = client.get("/v1/me/devices", headers=h)
        assert r.status_code == 200, r.text
        return {d["name"]: d for d in r.json()["items"]}

    seen = devices(phone)
    assert set(seen) == {"Living room TV", "Phone"}
    assert seen["Living room TV"]["now_playing"]["content_id"] == "some-title"
    assert seen["Phone"]["now_playing"] is None and seen["Phone"]["current"]
    tv_id = seen["Living room TV"]["id"]
    r = client.patch(f"/v1/me/devices/{tv_id}", json={"name": "Bedroom TV"}, headers=phone)
    assert r.status_code == 200, r.text
    assert "Bedroom TV" in devices(phone)
    r = client.patch(f"/v1/me/devices/{tv_id}", json={"name": ""}, headers=phone)
    assert r.status_code == 422 and r.json()["field"] == "name"
    # another account cannot see or touch it
    _, other = new_user(client)
    assert client.delete(f"/v1/me/devices/{tv_id}", headers=other).status_code == 404
    # removing it revokes its tokens: the TV is signed out, the phone is not
    assert client.delete(f"/v1/me/devices/{tv_id}", headers=phone).status_code == 204
    assert client.get("/v1/me/devices", headers=tv).status_code == 401
    refreshed = client.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "client_id": "mgw-app",
              "refresh_token": tv_tokens["refresh_token"]},
    )  # fmt: skip
    assert refreshed.status_code == 400
    assert set(devices(phone)) == {"Phone"}
