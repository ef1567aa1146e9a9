"""The OAuth 2 token endpoint, revocation, userinfo, JWKS and discovery.

The authorization endpoint is api/identity/authorize.py, the device flow api/identity/device.py.

Grants at ``POST /oauth/token`` (form-encoded, or JSON):

* ``password`` for first-party clients (``mgw-app``); with MFA on, the answer is
  ``mfa_required`` with an ``mfa_token``, redeemed by the grant
  ``urn:mgw:params:oauth:grant-type:mfa`` with ``otp`` or ``backup_code`` (``otp`` may also
  be sent with the password at once);
* ``authorization_code`` with PKCE S256 only, the exact redirect URI of the code;
* ``refresh_token``: rotated on every use; a used one revokes its family;
* ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628): the device polls and gets
  ``authorization_pending``, ``slow_down``, ``access_denied`` or ``expired_token`` until a
  signed-in user approves the code at ``POST /oauth/device/approve``.

Errors use RFC 6749's ``{"error", "error_description"}``. Wrong password, unknown account
and locked account give the same answer after the same work (one argon2 verification).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.context import ctx
from api.errors import Problem
from api.identity.commands import append, identity_event
from api.identity.device import device_grant
from api.identity.mfa import issue_mfa_token, mfa_token_state, second_factor, spend_mfa_token
from api.identity.oauth_requests import (
    NO_STORE,
    WRONG_CREDENTIALS,
    OAuthError,
    client_for,
    need,
    read_params,
)
from api.identity.tokens import grant_scope, revoke_session, rotate, start_session
from api.openapi import form_body
from api.ratelimit import limit
from core.metrics import SIGNINS
from domain.identity import clients as grants
from domain.identity.clients import OAuthClient
from domain.identity.opaque import token_hash
from domain.identity.pkce import verify_s256
from domain.identity.tokens import InvalidToken, jwks
from projections.identity.accounts import User, user_by_email, user_by_id
from projections.identity.sessions import (
    auth_code,
    session_by_refresh,
)

_EMAILISH = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")


# -- /oauth/token -------------------------------------------------------------------------


@form_body(
    {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {
                "type": "string",
                "enum": [grants.PASSWORD, grants.MFA, grants.REFRESH, grants.CODE, grants.DEVICE],
            },
            **{
                f: {"type": "string"}
                for f in (
                    "client_id",
                    "client_secret",
                    "scope",
                    "username",
                    "password",
                    "otp",
                    "backup_code",
                    "device_name",
                    "mfa_token",
                    "refresh_token",
                    "code",
                    "code_verifier",
                    "redirect_uri",
                    "device_code",
                )
            },
        },
    }
)
async def token(request: Request) -> Response:
    """Tokens (RFC 6749): the password, refresh, authorization code (PKCE), device (RFC
    8628) and MFA grants, form-encoded or JSON; errors are OAuth error objects."""
    grant = ""
    try:
        params = await read_params(request)
        grant = need(params, "grant_type")
        handler = _GRANTS.get(grant)
        if handler is None:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        client = client_for(ctx(request), params, grant)
        body = await handler(request, client, params)
    except OAuthError as err:
        # outcome: the OAuth error code (a short fixed list); a grant nobody knows is "other"
        SIGNINS.labels(grant if grant in _GRANTS else "other", err.error).inc()
        return err.response()
    SIGNINS.labels(grant, "issued").inc()
    return JSONResponse(body, headers=NO_STORE)


async def _password_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    username = need(params, "username").strip().lower()
    password = need(params, "password")
    await limit(request, "login", f"acct:{username}")
    if len(username) > 254 or len(password) > 1024:
        raise OAuthError("invalid_grant", WRONG_CREDENTIALS)
    async with c.stores.pg.connection() as conn:
        user = await user_by_email(conn, username)
    ident = c.identity
    if user is None or user.password_hash is None:
        await asyncio.to_thread(ident.passwords.dummy_verify, password)
        ok = False
    else:
        ok = await asyncio.to_thread(ident.passwords.verify, user.password_hash, password)
    if not ok or user is None or user.locked:
        await append(
            c,
            identity_event(
                request,
                "LoginFailed",
                user.user_id if user else "unknown",
                {
                    "user_id": user.user_id if user else None,
                    # only what looks like an email: a password typed in the wrong
                    # field must not land in the audit log
                    "email": username if _EMAILISH.match(username) else None,
                    "reason": "locked" if ok and user and user.locked else "credentials",
                },
            ),
        )
        raise OAuthError("invalid_grant", WRONG_CREDENTIALS)
    assert user.password_hash is not None
    if ident.passwords.needs_rehash(user.password_hash):
        new_hash = await asyncio.to_thread(ident.passwords.hash, password)
        await append(
            c,
            identity_event(
                request,
                "PasswordChanged",
                user.user_id,
                {
                    "user_id": user.user_id,
                    "password_hash": new_hash,
                    "reason": "rehash",
                    "previous_hash": user.password_hash,
                },
            ),
        )
    scope = grant_scope(params.get("scope"), user.roles)
    amr = ["pwd"]
    if user.mfa_secret_sealed is not None:
        if params.get("otp") or params.get("backup_code"):
            await limit(request, "mfa", f"acct:{user.user_id}")
        factor = await second_factor(request, user, params.get("otp"), params.get("backup_code"))
        if factor is None:
            if params.get("otp") or params.get("backup_code"):
                await _mfa_failed(request, user)
            mfa_token = await issue_mfa_token(
                c,
                user,
                {
                    "client_id": client.client_id,
                    "scope": scope,
                    "device_name": params.get("device_name"),
                    "credential": token_hash(user.password_hash),
                },
            )
            raise OAuthError(
                "mfa_required",
                "this account needs a second factor: send grant_type="
                f"{grants.MFA} with mfa_token and otp (or backup_code)",
                status=403,
                mfa_token=mfa_token,
            )
        amr.append(factor)
    return await start_session(
        request,
        user,
        client_id=client.client_id,
        method="password",
        amr=amr,
        scope=scope,
        device_name=(params.get("device_name") or None),
        credential=token_hash(user.password_hash),
    )


async def _mfa_failed(request: Request, user: User) -> None:
    await append(
        ctx(request),
        identity_event(
            request,
            "LoginFailed",
            user.user_id,
            {"user_id": user.user_id, "email": user.email.lower(), "reason": "mfa"},
        ),
    )


async def _mfa_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    mfa_token = need(params, "mfa_token")
    state = await mfa_token_state(c, mfa_token)
    if state is None or state.get("client_id") != client.client_id:
        raise OAuthError("invalid_grant", "mfa_token is not valid or has expired; sign in again")
    user_id = str(state["user_id"])
    await limit(request, "mfa", f"acct:{user_id}")
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, user_id)
    if user is None or user.locked:
        raise OAuthError("invalid_grant", WRONG_CREDENTIALS)
    factor = await second_factor(request, user, params.get("otp"), params.get("backup_code"))
    if factor is None:
        await _mfa_failed(request, user)
        raise OAuthError("invalid_grant", "the code is not valid (a TOTP code works once)")
    await spend_mfa_token(c, mfa_token)
    return await start_session(
        request,
        user,
        client_id=client.client_id,
        method=str(state.get("method") or "password"),
        amr=[str(state.get("first_factor") or "pwd"), factor],
        scope=str(state.get("scope") or ""),
        device_name=str(state.get("device_name") or "") or None,
        credential=str(state["credential"]) if state.get("credential") else None,
    )


async def _refresh_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    presented = need(params, "refresh_token")
    await limit(request, "token", f"rt:{token_hash(presented)[:16]}")
    return await rotate(request, presented, client.client_id)


async def _code_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    code = need(params, "code")
    verifier = need(params, "code_verifier")
    redirect_uri = need(params, "redirect_uri")
    await limit(request, "token")
    code_hash = token_hash(code)
    async with c.stores.pg.connection() as conn:
        found = await auth_code(conn, code_hash)
        user = await user_by_id(conn, found.user_id) if found else None
    if found is None or user is None or found.client_id != client.client_id:
        raise OAuthError("invalid_grant", "the code is not valid")
    if found.redirect_uri != redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    if not verify_s256(verifier, found.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    # spent or expired codes are refused by the projector too (a spent one revokes the
    # session it started): send it there rather than answer from a possibly stale read
    return await start_session(
        request,
        user,
        client_id=client.client_id,
        method="authorization_code",
        amr=list(found.amr),
        scope=found.scope,
        grant_ref=code_hash,
        nonce=found.nonce,
    )


_GRANTS = {
    grants.PASSWORD: _password_grant,
    grants.MFA: _mfa_grant,
    grants.REFRESH: _refresh_grant,
    grants.CODE: _code_grant,
    grants.DEVICE: device_grant,
}


# -- revocation, userinfo, keys, discovery -----------------------------------------------


async def revoke(request: Request) -> Response:
    """RFC 7009: always 200 for a well-formed request, whether or not the token was known."""
    c = ctx(request)
    try:
        params = await read_params(request)
        value = need(params, "token")
    except OAuthError as err:
        return err.response()
    hint = params.get("token_type_hint")
    if hint != "access_token" and 20 <= len(value) <= 512:
        async with c.stores.pg.connection() as conn:
            session = await session_by_refresh(conn, token_hash(value))
        if session is not None and session.revoked_at is None:
            await revoke_session(request, session.user_id, session.family_id, "revoke")
            return Response(status_code=200, headers=NO_STORE)
    try:
        claims = c.identity.verifier.verify(value)
    except InvalidToken:
        return Response(status_code=200, headers=NO_STORE)
    await revoke_session(request, claims.subject, claims.session_id, "revoke")
    return Response(status_code=200, headers=NO_STORE)


async def userinfo(request: Request) -> Response:
    me = await require(request, "profile")
    async with ctx(request).stores.pg.connection() as conn:
        user = await user_by_id(conn, me.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    return JSONResponse(
        {
            "sub": user.user_id,
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.display_name,
        }
    )


async def jwks_document(request: Request) -> Response:
    return JSONResponse(
        jwks(ctx(request).identity.keyset), headers={"Cache-Control": "public, max-age=300"}
    )


async def openid_configuration(request: Request) -> Response:
    base = ctx(request).identity.issuer
    return JSONResponse(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "device_authorization_endpoint": f"{base}/oauth/device/code",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "response_types_supported": ["code"],
            "grant_types_supported": sorted(grants.GRANTS),
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "scopes_supported": [
                "openid",
                "email",
                "offline_access",
                "profile",
                "playback",
                "library",
                "search",
            ],
            "claims_supported": ["sub", "email", "email_verified", "name", "amr", "nonce"],
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


routes = [
    Route("/oauth/token", token, methods=["POST"]),
    Route("/oauth/revoke", revoke, methods=["POST"]),
    Route("/oauth/userinfo", userinfo, methods=["GET"]),
    Route("/.well-known/jwks.json", jwks_document, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
]
