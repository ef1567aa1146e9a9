"""Signing in with an external provider: which account the identity belongs to.

The link (provider + subject) if one exists; else the account with the same email when
both the provider and this side verified it (linked now); else a new, verified account.
An unverified provider email never links to an account, and an unverified local account
is never linked into: someone could have registered another person's address and wait.
A provider is one factor: with MFA on, the answer is ``mfa_required`` like a password
sign-in. api/identity/external.py runs the protocol and hands the verified identity here.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.context import ctx
from api.errors import Problem
from api.identity.accounts import email_or_422, registration
from api.identity.commands import decide, identity_event
from api.identity.mfa import issue_mfa_token
from api.identity.oauth_requests import OAuthError
from api.identity.tokens import grant_scope, start_session
from core.ids import new_id
from domain.identity.providers import ExternalIdentity
from projections.identity.accounts import (
    User,
    external_link,
    user_by_email,
    user_by_id,
)


async def sign_in_external(request: Request, identity: ExternalIdentity) -> Response:
    """Sign in with a provider: the linked account, else the account with the same
    verified email (linked now), else a new account. An unverified provider email never
    links to an existing account: that would let anyone claim it."""
    c = ctx(request)
    async with c.stores.pg.connection() as conn:
        linked = await external_link(conn, identity.provider, identity.subject)
        user = await user_by_id(conn, linked) if linked else None
        if user is None and identity.email and identity.email_verified:
            user = await user_by_email(conn, identity.email)
            # an account nobody proved the email of could be someone's trap (registered
            # with another's address before they ever came): never link into it
            if user is not None and not user.email_verified:
                raise Problem(
                    409,
                    "an unverified account holds this email: verify it from its mail, or "
                    "reset its password (the reset link proves the email), then sign in "
                    f"with {identity.provider} again",
                    field="email",
                )
    if user is None:
        if not identity.email or not identity.email_verified:
            raise Problem(
                400,
                f"{identity.provider} did not share a verified email: verify it there first",
                field="email",
            )
        user = await _register_external(request, identity)
    if user.locked:
        return OAuthError("invalid_grant", "the account is locked").response()
    if linked is None:
        outcome, _ = await decide(
            c,
            identity_event(
                request,
                "ExternalIdentityLinked",
                user.user_id,
                {
                    "user_id": user.user_id,
                    "provider": identity.provider,
                    "subject": identity.subject,
                    "email": identity.email or "",
                },
            ),
        )
        if outcome != "ok":
            raise Problem(
                409, "this provider account is linked to another account", field="subject"
            )
    scope = grant_scope(None, user.roles)
    if user.mfa_secret_sealed is not None:  # the provider is one factor, not two
        mfa_token = await issue_mfa_token(
            c,
            user,
            {
                "client_id": "mgw-app",
                "scope": scope,
                "device_name": identity.provider,
                "method": "external",
                "first_factor": "ext",
            },
        )
        return OAuthError(
            "mfa_required",
            "this account needs a second factor: send grant_type="
            "urn:mgw:params:oauth:grant-type:mfa with mfa_token and otp (or backup_code)",
            status=403,
            mfa_token=mfa_token,
        ).response()
    try:
        body = await start_session(
            request,
            user,
            client_id="mgw-app",
            method="external",
            amr=["ext"],
            scope=scope,
            device_name=identity.provider,
        )
    except OAuthError as err:
        return err.response()
    return JSONResponse(
        {**body, "user": {"id": user.user_id, "email": user.email}, "provider": identity.provider},
        headers={"Cache-Control": "no-store"},
    )


async def _register_external(request: Request, identity: ExternalIdentity) -> User:
    c = ctx(request)
    assert identity.email is not None
    email = email_or_422(identity.email)
    user_id = new_id()
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "UserRegistered",
            user_id,
            registration(
                user_id,
                email,
                (identity.name or email.split("@")[0])[:100],
                password_hash=None,
                source=identity.provider,
                verified=True,
            ),
        ),
    )
    async with c.stores.pg.connection() as conn:
        user = await (user_by_id(conn, user_id) if outcome == "ok" else user_by_email(conn, email))
    if user is None:
        raise Problem(503, "the account is not ready yet; retry", headers={"Retry-After": "1"})
    return user
