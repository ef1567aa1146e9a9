"""What a security review of the authorization server tries, through the HTTP API.

Forged and broken tokens, malformed OAuth requests, the authorization-code flow with PKCE
(and its abuse), API keys and their scopes, another user's ids, key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.testclient import TestClient

from core.keys import KeyStore
from core.settings import Settings
from mgw.app import create_app
from tests.conftest import ADMIN_EMAIL
from tests.identity_helpers import PASSWORD, admin_headers, bearer, new_user, password_login

REDIRECT = "http://127.0.0.1:8765/callback"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    token = headers["Authorization"].split(" ", 1)[1]
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _refused(r: Any) -> None:
    assert r.status_code == 401, r.text
    assert r.json()["field"] == "Authorization"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")


def test_forged_and_broken_access_tokens_are_refused(
    client: TestClient, settings: Settings
) -> None:
    _, headers = new_user(client)
    assert client.get("/v1/me", headers=headers).status_code == 200
    good = headers["Authorization"].split(" ", 1)[1]
    claims = _claims(client, headers)
    header = jwt.get_unverified_header(good)

    # alg "none": no signature at all
    none = f"{_b64(json.dumps({'alg': 'none', 'typ': 'at+jwt'}).encode())}.{good.split('.')[1]}."
    # algorithm confusion: HS256 keyed with the server's public key, as published in JWKS
    keyset = KeyStore(settings.keys_dir).load_or_create()
    pem = keyset.verifying[header["kid"]].public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    signing_input = ".".join(
        [
            _b64(json.dumps({"alg": "HS256", "kid": header["kid"], "typ": "at+jwt"}).encode()),
            good.split(".")[1],
        ]
    )
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    confused = f"{signing_input}.{_b64(mac)}"
    # a key of our own, with the server's kid
    stranger = ec.generate_private_key(ec.SECP256R1())

    def signed(**over: Any) -> str:
        return jwt.encode(
            {**claims, **over},
            stranger,
            algorithm="ES256",
            headers={"kid": header["kid"], "typ": "at+jwt"},
        )

    parts = good.split(".")
    payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=="))
    payload["roles"] = ["admin", "user"]
    tampered = f"{parts[0]}.{_b64(json.dumps(payload).encode())}.{parts[2]}"
    for bad in (
        none,
        confused,
        signed(),
        tampered,
        "not.a.jwt",
        "garbage",
        good[:-10],
        "a" * 5000,
        good + "x",
    ):
        _refused(client.get("/v1/me", headers={"Authorization": f"Bearer {bad}"}))
    _refused(client.get("/v1/me", headers={"Authorization": "Basic dXNlcjpwYXNz"}))

    # right key, wrong claims: sign with the server's own key to isolate each check
    def ours(**over: Any) -> str:
        body = {**claims, **over}
        return jwt.encode(
            body,
            keyset.active.private_key,
            algorithm="ES256",
            headers={"kid": keyset.active.kid, "typ": "at+jwt"},
        )

    assert client.get("/v1/me", headers={"Authorization": f"Bearer {ours()}"}).status_code == 200
    now = int(time.time())
    for bad in (
        ours(aud="someone-else"),
        ours(iss="http://evil.example"),
        ours(exp=now - 120, iat=now - 1000, nbf=now - 1000),
        ours(nbf=now + 3600),
    ):
        _refused(client.get("/v1/me", headers={"Authorization": f"Bearer {bad}"}))
    # an ID token is not an access token
    no_typ = jwt.encode(
        claims, keyset.active.private_key, algorithm="ES256", headers={"kid": keyset.active.kid}
    )
    _refused(client.get("/v1/me", headers={"Authorization": f"Bearer {no_typ}"}))


def test_malformed_oauth_requests_get_oauth_errors(client: TestClient) -> None:
    def token(data: Any = None, **kw: Any) -> Any:
        r = client.post("/oauth/token", data=data, **kw)
        assert r.status_code in (400, 401), r.text
        assert set(r.json()) >= {"error", "error_description"}
        assert r.headers["Cache-Control"] == "no-store"
        return r.json()["error"]

    assert token({}) == "invalid_request"
    assert token({"grant_type": "client_credentials", "client_id": "mgw-app"}) == (
        "unsupported_grant_type"
    )
    assert token({"grant_type": "password", "client_id": "nope"}) == "invalid_client"
    assert (
        token({"grant_type": "password", "client_id": "mgw-tv", "username": "a", "password": "b"})
        == "unauthorized_client"
    )
    assert (
        token({"grant_type": "refresh_token", "client_id": "mgw-app", "refresh_token": "abc"})
        == "invalid_grant"
    )
    _, headers = new_user(client)
    # a truncated refresh token
    tokens = password_login(client, _me(client, headers)["email"], PASSWORD).json()
    assert (
        token(
            {
                "grant_type": "refresh_token",
                "client_id": "mgw-app",
                "refresh_token": tokens["refresh_token"][:-4],
            }
        )
        == "invalid_grant"
    )
    assert (
        token(
            {
                "grant_type": "password",
                "client_id": "mgw-app",
                "username": "x",
                "password": "y" * 5000,
            }
        )
        == "invalid_request"
    )
    assert token(
        content=b"grant_type=password&grant_type=refresh_token",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ) == ("invalid_request")
    assert (
        token(content=b"\xff\xfe", headers={"content-type": "application/x-www-form-urlencoded"})
        == "invalid_request"
    )
    assert token(content=b"[1,2]", headers={"content-type": "application/json"}) == (
        "invalid_request"
    )
    assert (
        token(
            {
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "client_id": "mgw-tv",
                "device_code": "nope",
            }
        )
        == "invalid_grant"
    )


def _me(client: TestClient, headers: dict[str, str]) -> dict[str, Any]:
    r = client.get("/v1/me", headers=headers)
    assert r.status_code == 200
    body: dict[str, Any] = r.json()
    return body


def test_wrong_password_unknown_user_and_locked_user_look_the_same(client: TestClient) -> None:
    user_id, headers = new_user(client)
    email = _me(client, headers)["email"]
    admin = admin_headers(client)
    wrong = password_login(client, email, "not the password at all")
    unknown = password_login(client, "nobody@example.com", PASSWORD)
    lock = client.post(f"/v1/admin/users/{user_id}/lock", headers=admin, json={"reason": "test"})
    assert lock.status_code == 200, lock.text
    locked = password_login(client, email, PASSWORD)
    for r in (wrong, unknown, locked):
        assert r.status_code == 400
    assert wrong.json() == unknown.json() == locked.json()


def test_authorization_code_with_pkce(client: TestClient) -> None:
    _, headers = new_user(client)
    verifier = secrets.token_urlsafe(48)
    challenge = _b64(hashlib.sha256(verifier.encode()).digest())
    q = {
        "response_type": "code",
        "client_id": "mgw-app",
        "redirect_uri": REDIRECT,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "xyz-123",
        "nonce": "n-0S6",
        "scope": "openid playback",
    }
    # unregistered redirect URIs are never redirected to
    evil = client.get(
        "/oauth/authorize",
        params={**q, "redirect_uri": "http://evil.example/cb"},
        follow_redirects=False,
    )
    assert evil.status_code == 400 and evil.json()["error"] == "invalid_request"
    # plain PKCE (or none) is refused, on the redirect
    plain = client.get(
        "/oauth/authorize",
        params={**q, "code_challenge_method": "plain"},
        headers=headers,
        follow_redirects=False,
    )
    assert plain.status_code == 302
    assert parse_qs(urlsplit(plain.headers["location"]).query)["error"] == ["invalid_request"]
    # without a signed-in user: the sign-in form
    form = client.get("/oauth/authorize", params=q, follow_redirects=False)
    assert form.status_code == 200 and "<form" in form.text
    ok = client.get("/oauth/authorize", params=q, headers=headers, follow_redirects=False)
    assert ok.status_code == 302, ok.text
    back = parse_qs(urlsplit(ok.headers["location"]).query)
    assert back["state"] == ["xyz-123"]
    code = back["code"][0]

    def redeem(**over: str) -> Any:
        data = {
            "grant_type": "authorization_code",
            "client_id": "mgw-app",
            "code": code,
            "redirect_uri": REDIRECT,
            "code_verifier": verifier,
            **over,
        }
        return client.post("/oauth/token", data=data)

    assert redeem(code_verifier=secrets.token_urlsafe(48)).json()["error"] == "invalid_grant"
    assert redeem(redirect_uri="mgw://oauth/callback").json()["error"] == "invalid_grant"
    first = redeem()
    assert first.status_code == 200, first.text
    body = first.json()
    id_claims = jwt.decode(body["id_token"], options={"verify_signature": False})
    assert id_claims["nonce"] == "n-0S6" and id_claims["aud"] == "mgw-app"
    assert "playback" in body["scope"].split()
    assert client.get("/v1/me/continue-watching", headers=bearer(body)).status_code == 200
    # the code again: refused, and the session it started is revoked (RFC 6749 §4.1.2)
    again = redeem()
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
    _refused(client.get("/v1/me/continue-watching", headers=bearer(body)))


def test_api_keys_scopes_and_revocation(client: TestClient) -> None:
    admin = admin_headers(client)
    _, user = new_user(client)
    # an unverified account cannot make keys
    r = client.post("/v1/me/api-keys", headers=user, json={"name": "x", "scopes": ["search"]})
    assert r.status_code == 403 and r.json()["field"] == "email"
    # a user cannot ask for scopes their roles lack (the admin can)
    made = client.post(
        "/v1/me/api-keys",
        headers=admin,
        json={"name": "ingest", "scopes": ["catalog:write"], "expires_in_days": 30},
    )
    assert made.status_code == 201, made.text
    key = made.json()["key"]
    assert key.startswith("mgw_") and made.json()["prefix"] in key
    listed = client.get("/v1/me/api-keys", headers=admin).json()["items"]
    assert [k["id"] for k in listed] == [made.json()["id"]] and "key" not in listed[0]
    movie = {"title": "Key Made", "year": 2001, "kind": "movie", "genres": ["Drama"]}
    assert client.post("/v1/content", json=movie, headers={"X-Api-Key": key}).status_code == 202
    via_bearer = client.post("/v1/content", json=movie, headers={"Authorization": f"Bearer {key}"})
    assert via_bearer.status_code == 202
    # the key's scopes only: no playback with a catalog key
    denied = client.get("/v1/me/continue-watching", headers={"X-Api-Key": key})
    assert denied.status_code == 403
    # a wrong secret with a real prefix, and a malformed key
    prefix = made.json()["prefix"]
    _refused(
        client.post("/v1/content", json=movie, headers={"X-Api-Key": f"mgw_{prefix}_{'A' * 43}"})
    )
    _refused(client.post("/v1/content", json=movie, headers={"X-Api-Key": "mgw_nope"}))
    # another user cannot see or revoke it
    other = client.delete(f"/v1/me/api-keys/{made.json()['id']}", headers=user)
    assert other.status_code == 404
    assert client.get("/v1/me/api-keys", headers=user).json()["items"] == []
    gone = client.delete(f"/v1/me/api-keys/{made.json()['id']}", headers=admin)
    assert gone.status_code == 204
    _refused(client.post("/v1/content", json=movie, headers={"X-Api-Key": key}))
    bad = client.post("/v1/me/api-keys", headers=admin, json={"scopes": ["root"]})
    assert bad.status_code == 422 and bad.json()["field"] == "scopes"


def test_sessions_are_private_and_revocable(client: TestClient) -> None:
    _, alice = new_user(client)
    _, bob = new_user(client)
    mine = client.get("/v1/me/sessions", headers=alice).json()["items"]
    assert len(mine) == 1 and mine[0]["current"] is True
    sid = mine[0]["id"]
    assert client.delete(f"/v1/me/sessions/{sid}", headers=bob).status_code == 404
    assert client.get("/v1/me", headers=alice).status_code == 200
    assert client.delete(f"/v1/me/sessions/{sid}", headers=alice).status_code == 204
    _refused(client.get("/v1/me", headers=alice))
    # logout everywhere
    email = _me(client, bob)["email"]
    second = bearer(password_login(client, email, PASSWORD).json())
    assert client.post("/v1/auth/logout-all", headers=bob).status_code == 204
    _refused(client.get("/v1/me", headers=second))


def test_revoke_endpoint_and_discovery(client: TestClient) -> None:
    _, headers = new_user(client)
    email = _me(client, headers)["email"]
    tokens = password_login(client, email, PASSWORD).json()
    r = client.post("/oauth/revoke", data={"token": tokens["refresh_token"]})
    assert r.status_code == 200
    again = client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "mgw-app",
            "refresh_token": tokens["refresh_token"],
        },
    )
    assert again.json()["error"] == "invalid_grant"
    _refused(client.get("/v1/me", headers=bearer(tokens)))
    assert client.post("/oauth/revoke", data={"token": "unknown-token-value"}).status_code == 200
    conf = client.get("/.well-known/openid-configuration").json()
    assert conf["code_challenge_methods_supported"] == ["S256"]
    assert conf["jwks_uri"].endswith("/.well-known/jwks.json")
    keys = client.get("/.well-known/jwks.json").json()["keys"]
    assert keys and all(k["alg"] == "ES256" and "d" not in k for k in keys)


async def _reload(client: TestClient) -> bool:
    changed: bool = await client.app.state.mgw.identity.reload_keys()  # type: ignore[attr-defined]
    return changed


def test_key_rotation_keeps_old_tokens_valid(client: TestClient, settings: Settings) -> None:
    _, headers = new_user(client)
    old_kid = jwt.get_unverified_header(headers["Authorization"].split(" ", 1)[1])["kid"]
    KeyStore(settings.keys_dir).rotate()
    assert client.portal.call(_reload, client)  # type: ignore[union-attr]
    kids = [k["kid"] for k in client.get("/.well-known/jwks.json").json()["keys"]]
    assert len(kids) == 2 and kids[0] != old_kid and old_kid in kids
    assert client.get("/v1/me", headers=headers).status_code == 200
    email = _me(client, headers)["email"]
    fresh = password_login(client, email, PASSWORD).json()
    assert jwt.get_unverified_header(fresh["access_token"])["kid"] == kids[0]
    assert client.get("/v1/me", headers=bearer(fresh)).status_code == 200


def test_bootstrap_admin_and_route_scopes(client: TestClient) -> None:
    admin = admin_headers(client)
    me = _me(client, admin)
    assert me["email"] == ADMIN_EMAIL and "admin" in me["roles"]
    _, user = new_user(client)
    movie = {"title": "Nope", "year": 2001, "kind": "movie", "genres": ["Drama"]}
    r = client.post("/v1/content", json=movie, headers=user)
    assert r.status_code == 403 and "catalog:write" in r.json()["detail"]
    r = client.post("/v1/content", json=movie)
    assert r.status_code == 401 and r.json()["field"] == "Authorization"
    assert (
        client.put(
            "/v1/admin/ranking/profiles/default", json={"weights": {"vector": 1}}, headers=user
        ).status_code
        == 403
    )
    assert client.post("/v1/content", json=movie, headers=admin).status_code == 202


def test_brute_force_meets_429_before_luck(settings: Settings) -> None:
    tight = replace(
        settings,
        identity=replace(settings.identity, rate_limits="login=3/60,register=100/60"),
    )
    with TestClient(create_app(tight)) as client:
        _, headers = new_user(client)  # one login of the 3
        email = _me(client, headers)["email"]
        answers = [password_login(client, email, f"guess number {i:04d}") for i in range(4)]
        assert [a.status_code for a in answers[:2]] == [400, 400]
        # answers let through say how much is left
        assert answers[0].headers["RateLimit-Limit"] == "3"
        assert answers[0].headers["RateLimit-Remaining"] == "1"
        assert answers[1].headers["RateLimit-Remaining"] == "0"
        limited = answers[2]
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["Retry-After"]) > 0
        assert limited.headers["RateLimit-Limit"] == "3"
        assert limited.headers["RateLimit-Remaining"] == "0"
        assert int(limited.headers["RateLimit-Reset"]) > 0
        # the right password does not get through either while the account is limited
        assert password_login(client, email, PASSWORD).status_code == 429


def test_review_findings_stay_fixed(client: TestClient, settings: Settings) -> None:
    admin = admin_headers(client)
    _, user = new_user(client)
    email = _me(client, user)["email"]
    # a device cannot be handed a session by an API key or a narrowed token
    key = client.post(
        "/v1/me/api-keys", headers=admin, json={"name": "k", "scopes": ["profile"]}
    ).json()["key"]
    code = client.post("/oauth/device/code", data={"client_id": "mgw-tv"}).json()["user_code"]
    by_key = client.post(
        "/oauth/device/approve", headers={"X-Api-Key": key}, data={"user_code": code}
    )
    assert by_key.status_code == 403
    narrow = password_login(client, email, PASSWORD, scope="profile search").json()
    by_narrow = client.post(
        "/oauth/device/approve", headers=bearer(narrow), data={"user_code": code}
    )
    assert by_narrow.status_code == 403
    # /oauth/authorize with a bearer token issues no scope that token lacks
    verifier = secrets.token_urlsafe(48)
    q = {
        "response_type": "code",
        "client_id": "mgw-app",
        "redirect_uri": REDIRECT,
        "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
        "scope": "playback profile search",
    }
    loc = client.get(
        "/oauth/authorize", params=q, headers=bearer(narrow), follow_redirects=False
    ).headers["location"]
    got = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "mgw-app",
            "redirect_uri": REDIRECT,
            "code": parse_qs(urlsplit(loc).query)["code"][0],
            "code_verifier": verifier,
        },
    ).json()
    assert set(got["scope"].split()) == {"profile", "search"}
    # lone surrogates and NUL bytes are 4xx, never 500
    for body in (
        {"grant_type": "refresh_token", "client_id": "mgw-app", "refresh_token": "\ud800" * 30},
        {"grant_type": "password", "client_id": "mgw-app", "username": "a\ud800", "password": "x"},
    ):
        r = client.post(
            "/oauth/token", content=json.dumps(body), headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = client.post(
        "/oauth/revoke",
        content=json.dumps({"token": "\udfff" * 30}),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 400
    assert client.delete("/v1/me/sessions/%00", headers=user).status_code == 404
    assert client.delete("/v1/me/api-keys/%00", headers=user).status_code == 404
    nul = client.get("/oauth/authorize", params={**q, "nonce": "\x00"}, follow_redirects=False)
    assert nul.status_code == 400
    # MFA only on a verified email (a squatter's MFA would lock the owner out)
    enrol = client.post("/v1/me/mfa/totp", headers=user)
    assert enrol.status_code == 403 and enrol.json()["field"] == "email"
    # a password typed into the email field does not reach the audit log
    password_login(client, "my secret passphrase", "whatever")
    audit = client.get("/v1/admin/audit", headers=admin, params={"action": "LoginFailed"})
    assert "my secret passphrase" not in audit.text


def test_bootstrap_does_not_promote_a_squatter(settings: Settings) -> None:
    plain = replace(
        settings,
        identity=replace(
            settings.identity, bootstrap_admin_email=None, bootstrap_admin_password=None
        ),
    )
    with TestClient(create_app(plain)) as c:
        r = c.post(
            "/v1/auth/register",
            json={
                "email": "boss@example.com",
                "password": "squatting on this address",
                "display_name": "Mallory",
            },
        )
        assert r.status_code == 201
    boot = replace(
        settings,
        identity=replace(
            settings.identity,
            bootstrap_admin_email="boss@example.com",
            bootstrap_admin_password="the operators passphrase",
        ),
    )
    with TestClient(create_app(boot)) as c:
        squat = password_login(c, "boss@example.com", "squatting on this address").json()
        assert "admin" not in _me(c, bearer(squat))["roles"]


def test_a_code_issued_before_sign_out_everywhere_is_dead(client: TestClient) -> None:
    _, headers = new_user(client)
    verifier = secrets.token_urlsafe(48)
    q = {
        "response_type": "code",
        "client_id": "mgw-app",
        "redirect_uri": REDIRECT,
        "code_challenge": _b64(hashlib.sha256(verifier.encode()).digest()),
        "code_challenge_method": "S256",
    }
    loc = client.get("/oauth/authorize", params=q, headers=headers, follow_redirects=False).headers[
        "location"
    ]
    code = parse_qs(urlsplit(loc).query)["code"][0]
    assert client.post("/v1/auth/logout-all", headers=headers).status_code == 204
    r = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": "mgw-app",
            "redirect_uri": REDIRECT,
            "code": code,
            "code_verifier": verifier,
        },
    )
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
