"""The admin API over accounts, end to end through HTTP: search, read, lock and unlock,
roles, sessions, audit; who may call it; and that no secret reaches the audit log or the
logs. Real PostgreSQL and Redis; the log is the embedded one.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from domain.identity.opaque import token_hash
from mgw.app import create_app
from tests.identity_helpers import PASSWORD, admin_headers, bearer, new_user, password_login


def _register(client: TestClient, email: str, name: str, password: str = PASSWORD) -> str:
    r = client.post(
        "/v1/auth/register", json={"email": email, "password": password, "display_name": name}
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _login(client: TestClient, email: str, password: str = PASSWORD) -> dict[str, Any]:
    r = password_login(client, email, password)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _refresh(client: TestClient, refresh_token: str) -> Any:
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": "mgw-app",
        },
    )


def _claims(access_token: str) -> dict[str, Any]:
    part = access_token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))))


def _problem(r: Any, status: int, field: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json"), r.text
    assert r.json()["field"] == field, r.text


def _audit(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every audit row matching ``params``, following the cursor."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        q = {**params, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/admin/audit", params=q, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return items


def test_an_admin_manages_a_user(client: TestClient) -> None:
    admin = admin_headers(client)
    me = client.get("/v1/me", headers=admin)
    assert me.status_code == 200, me.text
    admin_id = me.json()["id"]

    email = "mallory.hatter@example.com"
    user_id = _register(client, email, "Mallory Hatter")
    tokens = _login(client, email)
    assert password_login(client, email, "not the password").status_code == 400

    # -- search: by email or name substring, by exact id; cursor pages ---------------------
    for q in ("hatter@example", "MALLORY", "llory hat", user_id):
        r = client.get("/v1/admin/users", params={"q": q}, headers=admin)
        assert r.status_code == 200, r.text
        assert [u["id"] for u in r.json()["items"]] == [user_id], (q, r.text)
    found = r.json()["items"][0]
    assert found["email"] == email and found["roles"] == ["user"] and found["locked"] is False
    assert "password_hash" not in found and "mfa_secret_sealed" not in found
    nobody = client.get("/v1/admin/users", params={"q": "no-such-person"}, headers=admin)
    assert nobody.json() == {"items": [], "next_cursor": None}

    extra = [_register(client, f"pager{i}@example.com", f"Pager {i}") for i in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"q": "pager", "limit": "2", **({"cursor": cursor} if cursor else {})}
        page = client.get("/v1/admin/users", params=params, headers=admin)
        assert page.status_code == 200, page.text
        assert len(page.json()["items"]) <= 2
        seen += [u["id"] for u in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(extra)
    everyone = client.get("/v1/admin/users", params={"limit": "100"}, headers=admin).json()
    assert {admin_id, user_id, *extra} <= {u["id"] for u in everyone["items"]}

    _problem(client.get("/v1/admin/users", params={"limit": "0"}, headers=admin), 422, "limit")
    _problem(client.get("/v1/admin/users", params={"limit": "x"}, headers=admin), 422, "limit")
    _problem(client.get("/v1/admin/users", params={"cursor": "!!"}, headers=admin), 422, "cursor")
    _problem(client.get("/v1/admin/users", params={"q": "x" * 201}, headers=admin), 422, "q")
    _problem(client.get("/v1/admin/users", params={"q": "a\x00b"}, headers=admin), 422, "q")

    # -- read one: the account, its roles and scopes, its active sessions -------------------
    r = client.get(f"/v1/admin/users/{user_id}", headers=admin)
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["id"] == user_id and detail["roles"] == ["user"]
    assert "users:read" not in detail["scopes"] and "profile" in detail["scopes"]
    assert len(detail["sessions"]) == 1 and detail["sessions"][0]["revoked"] is False
    _problem(client.get("/v1/admin/users/no-such-id", headers=admin), 404, "id")

    # -- lock: the access token dies at once; sign-in looks like a wrong password -----------
    _problem(client.post(f"/v1/admin/users/{user_id}/lock", json={}, headers=admin), 422, "reason")
    _problem(
        client.post(
            f"/v1/admin/users/{user_id}/lock", json={"reason": "x", "why": "y"}, headers=admin
        ),
        422,
        "why",
    )
    _problem(
        client.post("/v1/admin/users/no-such-id/lock", json={"reason": "x"}, headers=admin),
        404,
        "id",
    )
    _problem(
        client.post(f"/v1/admin/users/{admin_id}/lock", json={"reason": "oops"}, headers=admin),
        409,
        "id",
    )
    locked = client.post(
        f"/v1/admin/users/{user_id}/lock", json={"reason": "chargeback fraud"}, headers=admin
    )
    assert locked.status_code == 200, locked.text
    assert locked.json()["locked"] is True and locked.json()["id"] == user_id
    gone = client.get("/v1/me", headers=bearer(tokens))
    assert gone.status_code == 401, gone.text
    right = password_login(client, email, PASSWORD)
    wrong = password_login(client, email, "not the password")
    assert right.status_code == wrong.status_code == 400
    assert right.json() == wrong.json() and right.json()["error"] == "invalid_grant"
    refused = _refresh(client, tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert client.get(f"/v1/admin/users/{user_id}", headers=admin).json()["sessions"] == []

    # -- unlock: sign-in works again ----------------------------------------------------------
    _problem(
        client.post(f"/v1/admin/users/{user_id}/unlock", json={"x": 1}, headers=admin), 422, "x"
    )
    unlocked = client.post(f"/v1/admin/users/{user_id}/unlock", headers=admin)
    assert unlocked.status_code == 200 and unlocked.json()["locked"] is False, unlocked.text
    tokens = _login(client, email)
    assert client.get("/v1/me", headers=bearer(tokens)).status_code == 200

    # -- roles: support is granted; tokens from before the change are refused ----------------
    role_url = f"/v1/admin/users/{user_id}/roles"
    _problem(client.put(f"{role_url}/superuser", headers=admin), 422, "role")
    _problem(client.delete(f"{role_url}/superuser", headers=admin), 422, "role")
    _problem(client.delete(f"{role_url}/user", headers=admin), 422, "role")
    _problem(client.put("/v1/admin/users/no-such-id/roles/support", headers=admin), 404, "id")
    _problem(client.delete(f"/v1/admin/users/{admin_id}/roles/admin", headers=admin), 409, "role")
    # at once: iat has milliseconds, so a token issued in the same second is refused too
    granted = client.put(f"{role_url}/support", headers=admin)
    assert granted.status_code == 200, granted.text
    assert granted.json()["roles"] == ["support", "user"]
    assert "users:read" in granted.json()["scopes"]
    old = client.get("/v1/me", headers=bearer(tokens))
    assert old.status_code == 401, old.text
    again = client.put(f"{role_url}/support", headers=admin)  # already held: no change
    assert again.status_code == 200 and again.json()["roles"] == ["support", "user"]

    support_tokens = _login(client, email)
    assert "users:read" in support_tokens["scope"].split()
    support = bearer(support_tokens)
    listed = client.get("/v1/admin/users", params={"q": "pager"}, headers=support)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 3, listed.text
    assert client.get("/v1/admin/audit", headers=support).status_code == 200
    no_lock = client.post(f"/v1/admin/users/{admin_id}/lock", json={"reason": "x"}, headers=support)
    _problem(no_lock, 403, "Authorization")
    _problem(
        client.put(f"/v1/admin/users/{user_id}/roles/admin", headers=support), 403, "Authorization"
    )

    # -- revoke every session: the refresh token no longer works ------------------------------
    _problem(client.post("/v1/admin/users/no-such-id/sessions/revoke", headers=admin), 404, "id")
    revoked = client.post(f"/v1/admin/users/{user_id}/sessions/revoke", headers=admin)
    assert revoked.status_code == 204, revoked.text
    refused = _refresh(client, support_tokens["refresh_token"])
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert client.get("/v1/admin/users", headers=support).status_code == 401
    assert client.get(f"/v1/admin/users/{user_id}", headers=admin).json()["sessions"] == []

    # the role comes off again; the admin keeps theirs
    dropped = client.delete(f"{role_url}/support", headers=admin)
    assert dropped.status_code == 200 and dropped.json()["roles"] == ["user"], dropped.text
    assert "admin" in client.get(f"/v1/admin/users/{admin_id}", headers=admin).json()["roles"]

    # -- the audit log: who did what to whom, from where ---------------------------------------
    rows = _audit(client, admin, target=user_id, limit=3)
    offsets = [row["id"] for row in rows]
    assert offsets == sorted(offsets, reverse=True) and len(set(offsets)) == len(offsets)
    actions = {row["action"] for row in rows}
    assert {
        "UserRegistered",
        "LoginSucceeded",
        "LoginFailed",
        "UserLocked",
        "UserUnlocked",
        "RoleGranted",
        "RoleRevoked",
        "SessionsRevoked",
    } <= actions, actions
    by_admin = [r for r in rows if r["action"] in {"UserLocked", "RoleGranted", "SessionsRevoked"}]
    assert len(by_admin) == 3
    for row in by_admin:
        assert row["actor_id"] == admin_id and row["target_id"] == user_id, row
        assert row["ip"] and row["user_agent"], row
        assert row["outcome"] == "ok"
    lock_row = next(r for r in rows if r["action"] == "UserLocked")
    assert lock_row["detail"] == {"reason": "chargeback fraud"}
    failed = [r for r in rows if r["action"] == "LoginFailed"]
    assert {r["detail"]["reason"] for r in failed} == {"credentials", "locked"}
    registered = next(r for r in rows if r["action"] == "UserRegistered")
    assert registered["actor_id"] == user_id and registered["ip"] and registered["user_agent"]

    only_locks = _audit(client, admin, action="UserLocked")
    assert [r["target_id"] for r in only_locks] == [user_id]
    newest = client.get("/v1/admin/audit", params={"limit": "1"}, headers=admin).json()
    assert len(newest["items"]) == 1 and newest["next_cursor"]
    _problem(client.get("/v1/admin/audit", params={"action": "Nope"}, headers=admin), 422, "action")
    _problem(client.get("/v1/admin/audit", params={"cursor": "xyz"}, headers=admin), 422, "cursor")
    bad = base64.urlsafe_b64encode(b"[-5]").decode().rstrip("=")
    _problem(client.get("/v1/admin/audit", params={"cursor": bad}, headers=admin), 422, "cursor")
    _problem(client.get("/v1/admin/audit", params={"limit": "201"}, headers=admin), 422, "limit")


def test_only_staff_reach_the_admin_routes(client: TestClient) -> None:
    user_id, plain = new_user(client)
    routes = [
        ("GET", "/v1/admin/users", None),
        ("GET", f"/v1/admin/users/{user_id}", None),
        ("POST", f"/v1/admin/users/{user_id}/lock", {"reason": "x"}),
        ("POST", f"/v1/admin/users/{user_id}/unlock", None),
        ("PUT", f"/v1/admin/users/{user_id}/roles/admin", None),
        ("PUT", f"/v1/admin/users/{user_id}/roles/support", None),
        ("DELETE", f"/v1/admin/users/{user_id}/roles/support", None),
        ("POST", f"/v1/admin/users/{user_id}/sessions/revoke", None),
        ("GET", "/v1/admin/audit", None),
    ]
    for method, url, body in routes:
        forbidden = client.request(method, url, json=body, headers=plain)
        _problem(forbidden, 403, "Authorization")
        assert "insufficient_scope" in forbidden.headers["WWW-Authenticate"]
        anonymous = client.request(method, url, json=body)
        _problem(anonymous, 401, "Authorization")
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        garbage = client.request(method, url, json=body, headers={"Authorization": "Bearer x.y.z"})
        _problem(garbage, 401, "Authorization")
    # nothing happened to the account
    admin = admin_headers(client)
    detail = client.get(f"/v1/admin/users/{user_id}", headers=admin).json()
    assert detail["roles"] == ["user"] and detail["locked"] is False
    assert len(detail["sessions"]) == 1


def test_no_secret_reaches_the_audit_log_or_the_logs(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    password = "Violet harbor lantern 92 quietly"
    email = "secretive@example.com"
    secrets: list[str] = [password]
    with TestClient(create_app(settings)) as client:
        user_id = _register(client, email, "Secretive Sam", password)
        tokens = _login(client, email, password)
        assert password_login(client, email, password + "!").status_code == 400
        rotated = _refresh(client, tokens["refresh_token"])
        assert rotated.status_code == 200, rotated.text
        again = rotated.json()
        assert client.get("/v1/me", headers=bearer(again)).status_code == 200
        secrets += [
            tokens["access_token"],
            tokens["refresh_token"],
            again["access_token"],
            again["refresh_token"],
            token_hash(tokens["refresh_token"]),
            token_hash(again["refresh_token"]),
        ]
        admin = admin_headers(client)
        secrets.append(admin["Authorization"].removeprefix("Bearer "))
        # an admin action last: decide waits for the projector, so every row above is in
        r = client.post(
            f"/v1/admin/users/{user_id}/lock", json={"reason": "audit check"}, headers=admin
        )
        assert r.status_code == 200, r.text
        assert settings.database_url
        with psycopg.connect(settings.database_url) as conn:
            audit_rows = conn.execute("SELECT * FROM audit_log ORDER BY log_offset").fetchall()
            hashes = conn.execute(
                "SELECT password_hash FROM users WHERE user_id = %s", (user_id,)
            ).fetchone()
    assert hashes is not None and hashes[0].startswith("$argon2id$")
    secrets.append(hashes[0])

    actions = {row[2] for row in audit_rows}
    assert {"UserRegistered", "SessionStarted", "LoginSucceeded", "LoginFailed"} <= actions
    assert {"RefreshTokenRotated", "UserLocked"} <= actions
    audit_text = "\n".join(repr(row) for row in audit_rows)
    log_text = caplog.text + "\n".join(
        f"{rec.getMessage()} {rec.__dict__!r}" for rec in caplog.records
    )
    assert caplog.records, "the app logged nothing at DEBUG: the capture is not working"
    for where, text in (("audit_log", audit_text), ("logs", log_text)):
        assert "$argon2id$" not in text, where
        for secret in secrets:
            assert secret not in text, (where, secret[:12])
