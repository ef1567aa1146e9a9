"""A user's whole journey through sign-in, end to end through the HTTP API.

Registration → verify email (real SMTP) → MFA enrolment → login with MFA → refresh
rotation → reuse detection → device flow on a TV → password reset revoking sessions.
Real PostgreSQL, Redis, SMTP (aiosmtpd); the log is the embedded one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pyotp
import pytest
from starlette.testclient import TestClient

from core.settings import OidcProviderSettings, Settings
from tests.fake_idp import FakeIdP, running_fake_idp
from tests.identity_helpers import PASSWORD, bearer, password_login
from tests.mail_server import MailBox, link_in, smtp_server


@pytest.fixture
def mailbox() -> Iterator[MailBox]:
    with smtp_server() as box:
        yield box


@pytest.fixture
def idp() -> Iterator[FakeIdP]:
    with running_fake_idp() as fake:
        yield fake


@pytest.fixture
def app_settings(settings: Settings, mailbox: MailBox, idp: FakeIdP) -> Settings:
    idp.register_client(
        "mgw-google", "g-secret", redirect_uris=[CALLBACK.format(base=settings.base_url)]
    )
    return replace(
        settings,
        identity=replace(
            settings.identity,
            smtp_host=mailbox.host,
            smtp_port=mailbox.port,
            device_interval_s=1,
            providers=(OidcProviderSettings("google", idp.issuer, "mgw-google", "g-secret"),),
        ),
    )


CALLBACK = "{base}/v1/auth/external/google/callback"


def _sign_in_with_google(client: TestClient) -> Any:
    """Follow the redirects by hand: our start → the provider → our callback."""
    start = client.get("/v1/auth/external/google/start", follow_redirects=False)
    assert start.status_code == 302, start.text
    at_provider = httpx.get(start.headers["location"], follow_redirects=False)
    assert at_provider.status_code in (302, 303), at_provider.text
    back = urlsplit(at_provider.headers["location"])
    return client.get(f"{back.path}?{back.query}")


def _token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


def _refresh(client: TestClient, refresh_token: str, client_id: str = "mgw-app") -> Any:
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "refresh_token",
            "refresh_token": refresh_token,
            "client_id": client_id,
        },
    )


def _register(client: TestClient, email: str, password: str = PASSWORD) -> Any:
    return client.post(
        "/v1/auth/register",
        json={"email": email, "password": password, "display_name": "Alice Liddell"},
    )


def test_the_whole_journey(client: TestClient, mailbox: MailBox, idp: FakeIdP) -> None:
    # -- registration: one account per email, case-insensitively -----------------------
    r = _register(client, "Alice@Example.com")
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    assert r.json()["email"] == "alice@example.com" and r.json()["email_verified"] is False
    dup = _register(client, "ALICE@example.COM")
    assert dup.status_code == 409 and dup.json()["field"] == "email", dup.text

    # -- verify the email through the link in the real mail ------------------------------
    mail = mailbox.wait_for("alice@example.com")
    link = link_in(mail, "/v1/auth/verify-email")
    verified = client.get(urlsplit(link).path + "?" + urlsplit(link).query)
    assert verified.status_code == 200, verified.text
    again = client.post("/v1/auth/verify-email", json={"token": _token_of(link)})
    assert again.status_code == 400 and again.json()["field"] == "token"  # single use

    tokens = password_login(client, "alice@example.com", PASSWORD).json()
    me = client.get("/v1/me", headers=bearer(tokens)).json()
    assert me["id"] == user_id and me["email_verified"] is True and me["mfa_enabled"] is False

    # -- MFA enrolment: provisioning URI + QR, confirmed with a first code --------------
    laptop = password_login(client, "alice@example.com", PASSWORD).json()
    start = client.post("/v1/me/mfa/totp", headers=bearer(tokens))
    assert start.status_code == 200, start.text
    secret = start.json()["secret"]
    assert start.json()["provisioning_uri"].startswith("otpauth://totp/")
    assert start.json()["qr_svg"].lstrip().startswith(("<?xml", "<svg"))
    totp = pyotp.TOTP(secret)
    confirm = client.post(
        "/v1/me/mfa/totp/confirm", headers=bearer(tokens), json={"code": totp.now()}
    )
    assert confirm.status_code == 200, confirm.text
    backup_codes = confirm.json()["backup_codes"]
    assert len(backup_codes) == 10 and len(set(backup_codes)) == 10
    # sessions opened with the password alone end; the enrolling one goes on
    assert client.get("/v1/me", headers=bearer(laptop)).status_code == 401
    assert _refresh(client, laptop["refresh_token"]).status_code == 400
    assert client.get("/v1/me", headers=bearer(tokens)).json()["mfa_enabled"] is True

    # -- login now needs the second factor ----------------------------------------------
    first = password_login(client, "alice@example.com", PASSWORD)
    assert first.status_code == 403 and first.json()["error"] == "mfa_required"
    mfa_token = first.json()["mfa_token"]
    assert "access_token" not in first.json()
    # the enrolment spent this step: the next step's code (inside the ±1 window) works
    code = totp.at(time.time() + 30)

    def mfa(**factor: str) -> Any:
        return client.post(
            "/oauth/token",
            data={
                "grant_type": "urn:mgw:params:oauth:grant-type:mfa",
                "client_id": "mgw-app",
                "mfa_token": mfa_token,
                **factor,
            },
        )

    wrong = mfa(otp="000000" if code != "000000" else "111111")
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    signed_in = mfa(otp=code)
    assert signed_in.status_code == 200, signed_in.text
    session = signed_in.json()
    # the same code again (a replay), with a fresh mfa_token: refused
    mfa_token = password_login(client, "alice@example.com", PASSWORD).json()["mfa_token"]
    assert mfa(otp=code).status_code == 400
    # a backup code works once
    assert mfa(backup_code=backup_codes[0]).status_code == 200
    mfa_token = password_login(client, "alice@example.com", PASSWORD).json()["mfa_token"]
    assert mfa(backup_code=backup_codes[0]).status_code == 400

    # -- refresh rotation ------------------------------------------------------------------
    r1 = session["refresh_token"]
    rotated = _refresh(client, r1)
    assert rotated.status_code == 200, rotated.text
    r2 = rotated.json()["refresh_token"]
    assert r2 != r1
    r3 = _refresh(client, r2).json()["refresh_token"]
    assert client.get("/v1/me", headers=bearer(rotated.json())).status_code == 200

    # -- reuse detection: a used refresh token revokes the whole family ------------------
    reuse = _refresh(client, r1)
    assert reuse.status_code == 400 and reuse.json()["error"] == "invalid_grant"
    assert "already used" in reuse.json()["error_description"]
    assert _refresh(client, r3).status_code == 400  # the family is gone
    gone = client.get("/v1/me", headers=bearer(rotated.json()))
    assert gone.status_code == 401 and "revoked" in gone.json()["detail"]

    # a fresh session for what follows (backup code: TOTP steps are spent)
    mfa_token = password_login(client, "alice@example.com", PASSWORD).json()["mfa_token"]
    phone = mfa(backup_code=backup_codes[1]).json()
    phone_headers = bearer(phone)

    # -- device flow on a TV ---------------------------------------------------------------
    dc = client.post("/oauth/device/code", data={"client_id": "mgw-tv"})
    assert dc.status_code == 200, dc.text
    grant = dc.json()
    assert grant["verification_uri"].endswith("/device")
    assert len(grant["user_code"]) == 9 and grant["user_code"][4] == "-"
    assert grant["interval"] == 1 and grant["expires_in"] > 0

    def poll() -> Any:
        return client.post(
            "/oauth/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": grant["device_code"],
                "client_id": "mgw-tv",
            },
        )

    pending = poll()
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    approve = client.post(
        "/oauth/device/approve",
        headers=phone_headers,
        data={"user_code": grant["user_code"].lower()},  # typed as the user likes
    )
    assert approve.status_code == 200, approve.text
    time.sleep(1.1)
    tv = poll()
    assert tv.status_code == 200, tv.text
    tv_tokens = tv.json()
    tv_me = client.get("/v1/me", headers=bearer(tv_tokens)).json()
    assert tv_me["id"] == user_id
    time.sleep(1.1)
    assert poll().json()["error"] == "invalid_grant"  # a device code is spent once

    # a second TV polling too fast is told to slow down; a denied one gets access_denied
    other = client.post("/oauth/device/code", data={"client_id": "mgw-tv"}).json()

    def poll_other() -> Any:
        return client.post(
            "/oauth/token",
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                "device_code": other["device_code"],
                "client_id": "mgw-tv",
            },
        )

    assert poll_other().json()["error"] == "authorization_pending"
    slow = poll_other().json()
    assert slow["error"] == "slow_down" and slow["interval"] == 6
    # denied on the verification page itself, signing in there (no app at hand)
    page = client.get("/device", params={"user_code": other["user_code"]})
    assert page.status_code == 200 and "<form" in page.text
    assert page.headers["X-Frame-Options"] == "DENY"
    wrong_pw = client.post(
        "/device",
        data={
            "user_code": other["user_code"],
            "username": "alice@example.com",
            "password": "not it at all",
            "approve": "false",
        },
    )
    assert wrong_pw.status_code == 401 and "wrong email or password" in wrong_pw.text
    deny = client.post(
        "/device",
        data={
            "user_code": other["user_code"],
            "username": "alice@example.com",
            "password": PASSWORD,
            "otp": backup_codes[3],
            "approve": "false",
        },
    )
    assert deny.status_code == 200, deny.text
    assert "denied" in deny.text
    time.sleep(6.1)
    assert poll_other().json()["error"] == "access_denied"

    # -- password reset over mail revokes every session ----------------------------------
    forgot = client.post("/v1/auth/password/forgot", json={"email": "ALICE@example.com"})
    assert forgot.status_code == 202
    unknown = client.post("/v1/auth/password/forgot", json={"email": "nobody@example.com"})
    assert unknown.status_code == 202 and unknown.json() == forgot.json()
    reset_mail = mailbox.wait_for("alice@example.com", timeout=10)
    while "reset" not in reset_mail["Subject"].lower():
        mailbox.messages.remove(reset_mail)
        reset_mail = mailbox.wait_for("alice@example.com", timeout=10)
    token = _token_of(link_in(reset_mail, "/reset-password"))
    weak = client.post("/v1/auth/password/reset", json={"token": token, "password": "short"})
    assert weak.status_code == 422 and weak.json()["field"] == "password"
    new_password = "a brand new passphrase, surely"
    # through the page the mailed link opens
    form = client.get(f"/reset-password?token={token}")
    assert form.status_code == 200 and token in form.text
    done = client.post("/reset-password", data={"token": token, "password": new_password})
    assert done.status_code == 200 and "Password changed" in done.text, done.text
    assert client.get("/v1/me", headers=phone_headers).status_code == 401
    assert client.get("/v1/me", headers=bearer(tv_tokens)).status_code == 401
    assert _refresh(client, tv_tokens["refresh_token"], "mgw-tv").status_code == 400
    again = client.post("/v1/auth/password/reset", json={"token": token, "password": new_password})
    assert again.status_code == 400
    old = password_login(client, "alice@example.com", PASSWORD)
    assert old.status_code == 400 and old.json()["error"] == "invalid_grant"
    fresh = password_login(client, "alice@example.com", new_password)
    assert fresh.status_code == 403 and fresh.json()["error"] == "mfa_required"

    # -- sign in with an external provider (a local OIDC provider, real protocol) --------
    # the provider vouches for alice's email: her existing account is linked, not copied
    idp.add_user("google-sub-alice", "alice@example.com", email_verified=True, name="Alice L")
    idp.approve_as("google-sub-alice")
    # alice has MFA: the provider counts as one factor, her backup code as the second
    first_factor = _sign_in_with_google(client)
    assert first_factor.status_code == 403, first_factor.text
    assert first_factor.json()["error"] == "mfa_required"
    mfa_token = first_factor.json()["mfa_token"]
    linked = mfa(backup_code=backup_codes[2])
    assert linked.status_code == 200, linked.text
    ext_me = client.get("/v1/me", headers=bearer(linked.json())).json()
    assert ext_me["id"] == user_id
    # an email no account has: a new, verified account
    idp.add_user("google-sub-bob", "bob@example.com", email_verified=True, name="Bob")
    idp.approve_as("google-sub-bob")
    bob = _sign_in_with_google(client)
    assert bob.status_code == 200, bob.text
    bob_me = client.get("/v1/me", headers=bearer(bob.json())).json()
    assert bob_me["id"] != user_id and bob_me["email"] == "bob@example.com"
    assert bob_me["email_verified"] is True
    # the second time, the link (provider + subject) finds the same account
    assert _sign_in_with_google(client).json()["user"]["id"] == bob_me["id"]
    # an unverified email at the provider never takes over an account
    idp.add_user("google-sub-mallory", "alice@example.com", email_verified=False)
    idp.approve_as("google-sub-mallory")
    refused = _sign_in_with_google(client)
    assert refused.status_code == 400 and refused.json()["field"] == "email"


def test_external_sign_in_never_links_into_an_unverified_account(
    client: TestClient, idp: FakeIdP
) -> None:
    # someone registers another person's address and never verifies it
    squat = _register(client, "carol@example.com", "squatting on this address")
    assert squat.status_code == 201
    idp.add_user("google-sub-carol", "carol@example.com", email_verified=True, name="Carol")
    idp.approve_as("google-sub-carol")
    refused = _sign_in_with_google(client)
    assert refused.status_code == 409 and refused.json()["field"] == "email"
    assert "reset" in refused.json()["detail"]
