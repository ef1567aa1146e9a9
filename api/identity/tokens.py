"""A session and its tokens: starting one (every grant ends here), rotating its refresh
token, revoking it.

``start_session`` appends ``SessionStarted`` and answers with the token response (access,
refresh and, for ``openid``, ID token); ``rotate`` spends a refresh token for a new one;
``revoke_session`` and ``revoke_all`` end one session or every session of an account and
refresh this process's revocation cache at once. The routes over sessions are
api/identity/sessions.py.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from starlette.requests import Request

from api.context import AppContext, ctx
from api.identity.commands import append, decide, identity_event
from api.identity.oauth_requests import OAuthError
from core.ids import new_id, utcnow
from domain.identity.opaque import new_token, token_hash
from domain.identity.roles import ALL_SCOPES, scopes_for
from domain.identity.tokens import issue_access_token, issue_id_token
from projections.identity.accounts import User, user_by_id
from projections.identity.sessions import session_by_refresh

OIDC_SCOPES = frozenset({"openid", "email", "offline_access"})


# -- scopes ----------------------------------------------------------------------------


def grant_scope(requested: str | None, roles: tuple[str, ...]) -> str:
    """The scopes a new session gets: what was asked for (all the roles allow when
    nothing was), less what the roles do not allow. Unknown scopes are an error."""
    allowed = scopes_for(roles)
    if not requested or not requested.strip():
        return " ".join(sorted(allowed))
    asked = set(requested.split())
    unknown = asked - ALL_SCOPES - OIDC_SCOPES
    if unknown:
        raise OAuthError("invalid_scope", f"unknown scope: {' '.join(sorted(unknown))}")
    return " ".join(sorted((asked & allowed) | (asked & OIDC_SCOPES)))


def _api_scopes(scope: str, roles: tuple[str, ...]) -> str:
    return " ".join(sorted(set(scope.split()) & scopes_for(roles)))


# -- issuing ---------------------------------------------------------------------------


def _tokens(
    c: AppContext,
    user: User,
    *,
    family_id: str,
    refresh: str,
    scope: str,
    client_id: str,
    amr: list[str],
    nonce: str | None = None,
    auth_time: int | None = None,
) -> dict[str, Any]:
    ident = c.identity
    ttl = c.settings.identity.access_token_ttl_s
    now = time.time()
    api_scope = _api_scopes(scope, user.roles)
    body: dict[str, Any] = {
        "access_token": issue_access_token(
            ident.keyset,
            issuer=ident.issuer,
            audience=c.settings.identity.audience,
            subject=user.user_id,
            session_id=family_id,
            scope=api_scope,
            client_id=client_id,
            roles=list(user.roles),
            amr=amr,
            ttl_s=ttl,
            now=now,
        ),
        "token_type": "Bearer",
        "expires_in": ttl,
        "refresh_token": refresh,
        "scope": scope,
    }
    if "openid" in scope.split():
        body["id_token"] = issue_id_token(
            ident.keyset,
            issuer=ident.issuer,
            audience=client_id,
            subject=user.user_id,
            nonce=nonce,
            email=user.email,
            email_verified=user.email_verified,
            auth_time=auth_time or int(now),  # when the user signed in, not refreshed
            amr=amr,
            ttl_s=ttl,
            now=int(now),
        )
    return body


_REFUSED = {
    "locked": "the account is locked",
    "reused": "the code was already used; the session it started is revoked",
    "expired": "the grant has expired",
    "invalid": "the grant is not valid",
    "stale": "the password changed meanwhile; sign in again",
}


async def start_session(
    request: Request,
    user: User,
    *,
    client_id: str,
    method: str,
    amr: list[str],
    scope: str,
    grant_ref: str | None = None,
    device_name: str | None = None,
    nonce: str | None = None,
    credential: str | None = None,
) -> dict[str, Any]:
    """Create a refresh-token family for ``user`` and answer with the token response."""
    c = ctx(request)
    family_id = new_id()
    refresh = new_token()
    expires = utcnow() + timedelta(days=c.settings.identity.refresh_ttl_days)
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "SessionStarted",
            user.user_id,
            {
                "user_id": user.user_id,
                "family_id": family_id,
                "client_id": client_id,
                "refresh_hash": token_hash(refresh),
                "expires_at": expires,
                "method": method,
                "amr": amr,
                "scope": scope,
                "grant_ref": grant_ref,
                "device_name": device_name,
                "credential": credential,
            },
        ),
    )
    if outcome == "ok":  # roles as they are now, after whatever the log decided before
        async with c.stores.pg.connection() as conn:
            user = await user_by_id(conn, user.user_id) or user
    if outcome != "ok":
        if outcome == "reused":  # the projector revoked the first session: refuse it here now
            await c.identity.revocations.refresh()
        raise OAuthError("invalid_grant", _REFUSED.get(outcome, "the grant was refused"))
    await append(
        c,
        identity_event(
            request,
            "LoginSucceeded",
            user.user_id,
            {"user_id": user.user_id, "method": method, "client_id": client_id},
        ),
    )
    return _tokens(
        c,
        user,
        family_id=family_id,
        refresh=refresh,
        scope=scope,
        client_id=client_id,
        amr=amr,
        nonce=nonce,
    )


async def rotate(request: Request, presented: str, client_id: str) -> dict[str, Any]:
    c = ctx(request)
    if not 20 <= len(presented) <= 512:
        raise OAuthError("invalid_grant", "refresh token is not valid")
    presented_hash = token_hash(presented)
    async with c.stores.pg.connection() as conn:
        session = await session_by_refresh(conn, presented_hash)
        user = await user_by_id(conn, session.user_id) if session else None
    if session is None or user is None:
        raise OAuthError("invalid_grant", "refresh token is not valid")
    if session.client_id != client_id:
        raise OAuthError("invalid_grant", "refresh token was issued to another client")
    refresh = new_token()
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "RefreshTokenRotated",
            user.user_id,
            {
                "user_id": user.user_id,
                "family_id": session.family_id,
                "presented_hash": presented_hash,
                "refresh_hash": token_hash(refresh),
            },
        ),
    )
    if outcome == "reuse":
        await c.identity.revocations.refresh()
        raise OAuthError(
            "invalid_grant",
            "refresh token was already used: the session is revoked, sign in again",
        )
    if outcome != "ok":
        raise OAuthError("invalid_grant", f"refresh token refused ({outcome})")
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, user.user_id) or user
    return _tokens(
        c,
        user,
        family_id=session.family_id,
        refresh=refresh,
        scope=session.scope,
        client_id=client_id,
        amr=list(session.amr),
        auth_time=int(session.created_at.timestamp()),
    )


async def revoke_session(request: Request, user_id: str, family_id: str, reason: str) -> bool:
    c = ctx(request)
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "SessionRevoked",
            user_id,
            {"user_id": user_id, "family_id": family_id, "reason": reason},
        ),
    )
    await c.identity.revocations.refresh()
    return outcome == "ok"


async def revoke_all(request: Request, user_id: str, reason: str, actor: str | None = None) -> None:
    c = ctx(request)
    await decide(
        c,
        identity_event(
            request, "SessionsRevoked", user_id, {"user_id": user_id, "reason": reason}, actor
        ),
    )
    await c.identity.revocations.refresh()
