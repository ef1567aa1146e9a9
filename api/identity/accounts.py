"""Accounts: register, verify the email, change or reset the password, read yourself.

* ``POST /v1/auth/register {email, password, display_name}`` → 201, or 409 when the
  email has an account. The identity projector decides (first registration of an email
  in log order wins); the route waits for its outcome.
* ``GET|POST /v1/auth/verify-email`` with the mailed token; ``POST
  /v1/auth/verify-email/resend`` (signed in) mails a new link.
* ``POST /v1/auth/password/forgot {email}`` → 202 whether or not the email has an
  account (nothing to learn from it); ``POST /v1/auth/password/reset {token, password}``
  spends the token (single use, 30 minutes) and signs out every session.
* ``POST /v1/me/password {current_password, new_password}``; ``GET /v1/me``.

Unverified accounts can sign in, watch and search; they cannot create API keys or enable
MFA until the email is verified (docs/identity.md). Signing in through a provider is
api/identity/external_accounts.py, the first admin api/identity/bootstrap.py.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import require
from api.context import AppContext, ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.identity.tokens import revoke_session
from api.ratelimit import limit
from api.requests import read_json, reject_nul
from api.responses import Body, respond
from core.ids import new_id, utcnow
from domain.identity.emails import normalize_email, reset_message, verification_message
from domain.identity.opaque import new_token, token_hash
from domain.identity.passwords import PasswordRejected, check_password
from projections.identity.accounts import (
    email_token,
    user_by_email,
    user_by_id,
)
from projections.identity.sessions import sessions_of

log = logging.getLogger("mgw.identity")
VERIFY_TTL = timedelta(hours=48)
RESET_TTL = timedelta(minutes=30)


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=254)
    password: str = Field(min_length=1, max_length=1024)
    display_name: str = Field(min_length=1, max_length=100)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        return reject_nul(v)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    token: str = Field(min_length=20, max_length=256)


class ForgotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(min_length=3, max_length=254)


class ResetIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(min_length=20, max_length=256)
    password: str = Field(min_length=1, max_length=1024)


class ChangeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Field(min_length=1, max_length=1024)


def registration(
    user_id: str,
    email: str,
    name: str,
    *,
    password_hash: str | None,
    source: str,
    verified: bool,
    roles: tuple[str, ...] = ("user",),
) -> dict[str, Any]:
    """A ``UserRegistered`` payload (without the audit fields)."""
    return {
        "user_id": user_id,
        "email": email,
        "display_name": name,
        "password_hash": password_hash,
        "source": source,
        "email_verified": verified,
        "roles": list(roles),
    }


def email_or_422(raw: str) -> str:
    try:
        return normalize_email(raw)
    except ValueError as exc:
        raise Problem(422, f"email: {exc}", field="email") from None


def _policy(password: str, field: str, *, email: str, name: str | None = None) -> None:
    try:
        check_password(password, email=email, display_name=name)
    except PasswordRejected as exc:
        raise Problem(422, f"{field}: {exc}", field=field) from None


# -- mail ------------------------------------------------------------------------------


async def _send(c: AppContext, msg: Any) -> None:
    mailer = c.identity.mailer
    if mailer is None:
        log.warning("no mailer configured: a %s mail was not sent", msg["Subject"])
        return
    try:
        await mailer.send(msg)
    except Exception as exc:  # the account change stands; the user can ask again
        log.warning("mail not sent: %s", type(exc).__name__)


async def request_verification(request: Request, user_id: str, email: str, name: str) -> None:
    c = ctx(request)
    token = new_token()
    # decided before the mail leaves: a link followed at once must find its token
    await decide(
        c,
        identity_event(
            request,
            "EmailVerificationRequested",
            user_id,
            {
                "user_id": user_id,
                "email": email,
                "token_hash": token_hash(token),
                "expires_at": utcnow() + VERIFY_TTL,
            },
        ),
    )
    link = f"{c.settings.base_url}/v1/auth/verify-email?token={token}"
    msg = verification_message(
        to=email,
        display_name=name,
        link=link,
        sender=c.settings.identity.mail_from,
        expires_minutes=int(VERIFY_TTL.total_seconds() // 60),
    )
    c.identity.spawn(_send(c, msg))


# -- routes ----------------------------------------------------------------------------


async def register(request: Request) -> Response:
    c = ctx(request)
    body = await read_json(request, RegisterIn)
    await limit(request, "register")
    email = email_or_422(body.email)
    name = body.display_name.strip()
    if not name:
        raise Problem(422, "display_name: must not be blank", field="display_name")
    _policy(body.password, "password", email=email, name=name)
    password_hash = await asyncio.to_thread(c.identity.passwords.hash, body.password)
    user_id = new_id()
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "UserRegistered",
            user_id,
            registration(
                user_id, email, name, password_hash=password_hash, source="password", verified=False
            ),
        ),
    )
    if outcome == "conflict":
        raise Problem(
            409,
            "email: an account with this email exists; sign in or reset the password",
            field="email",
        )
    if outcome != "ok":
        raise Problem(422, "the registration was refused", field="body")
    await request_verification(request, user_id, email, name)
    return respond(
        Registered,
        {"id": user_id, "email": email, "display_name": name, "email_verified": False},
        status=201,
        headers={"Location": "/v1/me"},
    )


async def verify_email(request: Request) -> Response:
    c = ctx(request)
    if request.method == "GET":
        raw = request.query_params.get("token", "")
        if not 20 <= len(raw) <= 256:
            raise Problem(
                422, "token: the link is incomplete; open it from the mail", field="token"
            )
    else:
        raw = (await read_json(request, TokenIn)).token
    hashed = token_hash(raw)
    async with c.stores.pg.connection() as conn:
        found = await email_token(conn, hashed, "verify")
        user = await user_by_id(conn, found[0]) if found else None
    if found is None or user is None:
        raise Problem(400, "token: this verification link is not valid", field="token")
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "EmailVerified",
            user.user_id,
            {"user_id": user.user_id, "email": user.email, "token_hash": hashed},
        ),
    )
    if outcome != "ok":
        raise Problem(
            400,
            "token: this link was used or has expired; ask for a new one",
            field="token",
        )
    return respond(EmailVerified, {"email": user.email, "email_verified": True})


async def resend_verification(request: Request) -> Response:
    me = await require(request, "profile")
    c = ctx(request)
    await limit(request, "password_reset", f"acct:{me.user_id}")
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, me.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    if user.email_verified:
        return respond(VerificationSent, {"email_verified": True})
    await request_verification(request, user.user_id, user.email, user.display_name)
    return respond(VerificationSent, {"email_verified": False, "sent": True}, 202)


async def forgot_password(request: Request) -> Response:
    c = ctx(request)
    body = await read_json(request, ForgotIn)
    email = email_or_422(body.email)
    await limit(request, "password_reset", f"acct:{email}")
    # the same answer and the same work in the request, account or not: the lookup,
    # the event and the mail happen after the response
    c.identity.spawn(_reset_mail(request, email))
    return respond(
        Done, {"detail": "if an account has this email, a reset link is on its way"}, 202
    )


async def _reset_mail(request: Request, email: str) -> None:
    c = ctx(request)
    try:
        async with c.stores.pg.connection() as conn:
            user = await user_by_email(conn, email)
        if user is None or user.locked:
            return
        token = new_token()
        await decide(
            c,
            identity_event(
                request,
                "PasswordResetRequested",
                user.user_id,
                {
                    "user_id": user.user_id,
                    "token_hash": token_hash(token),
                    "expires_at": utcnow() + RESET_TTL,
                },
            ),
        )
        link = f"{c.settings.base_url}/reset-password?token={token}"
        msg = reset_message(
            to=user.email,
            display_name=user.display_name,
            link=link,
            sender=c.settings.identity.mail_from,
            expires_minutes=int(RESET_TTL.total_seconds() // 60),
        )
        await _send(c, msg)
    except Exception as exc:
        log.warning("reset mail failed: %s", type(exc).__name__)


async def reset_password(request: Request) -> Response:
    body = await read_json(request, ResetIn)
    await complete_reset(request, body.token, body.password)
    return respond(Done, {"detail": "password changed; every session was signed out"})


async def complete_reset(request: Request, token: str, password: str) -> None:
    """Spend a reset token on a new password (Problem when refused); the JSON route and
    the page of the mailed link share it."""
    c = ctx(request)
    await limit(request, "password_reset")
    hashed = token_hash(token)
    async with c.stores.pg.connection() as conn:
        found = await email_token(conn, hashed, "reset")
        user = await user_by_id(conn, found[0]) if found else None
    if found is None or user is None or found[2] is not None or found[1] <= utcnow():
        raise Problem(400, "token: this reset link is not valid, used or expired", field="token")
    _policy(password, "password", email=user.email, name=user.display_name)
    new_hash = await asyncio.to_thread(c.identity.passwords.hash, password)
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "PasswordResetCompleted",
            user.user_id,
            {"user_id": user.user_id, "token_hash": hashed, "password_hash": new_hash},
        ),
    )
    if outcome != "ok":
        raise Problem(400, "token: this reset link is not valid, used or expired", field="token")
    await c.identity.revocations.refresh()


async def change_password(request: Request) -> Response:
    me = await require(request, "profile")
    c = ctx(request)
    body = await read_json(request, ChangeIn)
    await limit(request, "login", f"acct:{me.user_id}")
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, me.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    ok = user.password_hash is not None and await asyncio.to_thread(
        c.identity.passwords.verify, user.password_hash, body.current_password
    )
    if not ok:
        raise Problem(403, "current_password: not the current password", field="current_password")
    _policy(body.new_password, "new_password", email=user.email, name=user.display_name)
    new_hash = await asyncio.to_thread(c.identity.passwords.hash, body.new_password)
    await decide(
        c,
        identity_event(
            request,
            "PasswordChanged",
            user.user_id,
            {"user_id": user.user_id, "password_hash": new_hash, "reason": "change"},
        ),
    )
    # a session someone else opened with the old password ends with it
    async with c.stores.pg.connection() as conn:
        others = [s for s in await sessions_of(conn, user.user_id) if s.family_id != me.session_id]
    for s in others:
        await revoke_session(request, user.user_id, s.family_id, "password_change")
    return respond(
        PasswordChanged, {"detail": "password changed", "sessions_signed_out": len(others)}
    )


class Registered(Body):
    id: str
    email: str
    display_name: str | None
    email_verified: bool


class EmailVerified(Body):
    email: str
    email_verified: bool


class VerificationSent(Body):
    """Already verified (200), or a new link sent (202, ``sent``)."""

    email_verified: bool
    sent: bool | None = None


class Done(Body):
    detail: str


class PasswordChanged(Done):
    sessions_signed_out: int = Field(description="the other sessions this change ended")


class Account(Body):
    id: str
    email: str
    display_name: str | None
    email_verified: bool
    roles: list[str]
    locked: bool
    mfa_enabled: bool
    created_at: datetime
    last_login_at: datetime | None


class Me(Account):
    scopes: list[str] = Field(description="what this credential may do")
    auth: str = Field(description="how the caller signed in: the credential's kind")


async def me(request: Request) -> Response:
    principal = await require(request, "profile")
    async with ctx(request).stores.pg.connection() as conn:
        user = await user_by_id(conn, principal.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    return respond(
        Me, {**user.public(), "scopes": sorted(principal.scopes), "auth": principal.kind}
    )


routes = [
    Route("/v1/auth/register", register, methods=["POST"]),
    Route("/v1/auth/verify-email", verify_email, methods=["GET", "POST"]),
    Route("/v1/auth/verify-email/resend", resend_verification, methods=["POST"]),
    Route("/v1/auth/password/forgot", forgot_password, methods=["POST"]),
    Route("/v1/auth/password/reset", reset_password, methods=["POST"]),
    Route("/v1/me/password", change_password, methods=["POST"]),
    Route("/v1/me", me, methods=["GET"]),
]
