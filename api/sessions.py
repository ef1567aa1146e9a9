"""Sessions: starting one (any grant ends here), rotating its refresh token, ending it.

Also the one way identity commands get their answer: ``decide`` appends the event and
waits for the outcome the identity projector wrote for it (docs/identity.md).

Routes: ``GET /v1/me/sessions``, ``DELETE /v1/me/sessions/{id}``, ``POST /v1/auth/logout``
(this session), ``POST /v1/auth/logout-all`` (every session of the account).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.context import AppContext, ctx
from api.errors import Problem
from core.backoff import Backoff
from core.events import Event
from core.ids import new_id, utcnow
from domain.identity.opaque import new_token, token_hash
from domain.identity.roles import ALL_SCOPES, scopes_for
from domain.identity.tokens import issue_access_token, issue_id_token
from projections.identity import User, outcome_of, user_by_id
from projections.sessions import session_by_id, session_by_refresh, sessions_of

OIDC_SCOPES = frozenset({"openid", "email", "offline_access"})
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
#: a decision is waited for at 1 ms doubling to 20 ms: sign-ins are latency-bound
_DECIDE_POLL = Backoff(first=0.001, cap=0.02, jitter=False)


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``{"error", "error_description"}``."""

    def __init__(self, error: str, description: str, status: int = 400, **extra: Any) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.extra = extra

    def response(self) -> Response:
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="mgw"'
        return JSONResponse(
            {"error": self.error, "error_description": self.description, **self.extra},
            status_code=self.status,
            headers=headers,
        )


def request_meta(request: Request, actor_id: str | None = None) -> dict[str, Any]:
    """The audit fields every identity event carries."""
    ua = request.headers.get("user-agent")
    return {
        "actor_id": actor_id,
        "ip": request.client.host if request.client else None,
        "user_agent": ua[:256] if ua else None,
    }


def identity_event(
    request: Request, event_type: str, key: str, payload: dict[str, Any], actor: str | None = None
) -> Event:
    return Event(
        event_type,
        key,
        {**payload, **request_meta(request, actor)},
        occurred_at=utcnow(),
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )


async def decide(c: AppContext, event: Event) -> tuple[str, dict[str, Any]]:
    """Append ``event`` and wait for the identity projector's outcome for it."""
    pos = await c.publisher.publish(event)
    from api.consistency import wait_until_covered

    # The outcome and the watermark commit in one transaction: once the watermark covers
    # the event, no outcome means the projector refused the event itself.
    wait_s = max(c.settings.consistency_wait_s, 5.0)
    if not await wait_until_covered(c.stores.pg, ["identity"], pos, wait_s, poll=_DECIDE_POLL):
        raise Problem(
            503,
            "the identity projection has not caught up; retry",
            headers={"Retry-After": "1"},
        )
    async with c.stores.pg.connection() as conn:
        found = await outcome_of(conn, event.event_id)
    return found if found is not None else ("rejected", {})


async def append(c: AppContext, event: Event) -> None:
    await c.publisher.publish(event)


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


# -- routes ----------------------------------------------------------------------------


async def list_sessions(request: Request) -> Response:
    me = await require(request, "profile")
    async with ctx(request).stores.pg.connection() as conn:
        items = await sessions_of(conn, me.user_id)
    return JSONResponse(
        {"items": [{**s.public(), "current": s.family_id == me.session_id} for s in items]}
    )


async def delete_session(request: Request) -> Response:
    me = await require(request, "profile")
    family_id = request.path_params["session_id"]
    if len(family_id) > 64 or "\x00" in family_id:
        raise Problem(404, "no such session", field="session_id")
    async with ctx(request).stores.pg.connection() as conn:
        session = await session_by_id(conn, family_id)
    if session is None or session.user_id != me.user_id:
        raise Problem(404, "no such session", field="session_id")
    await revoke_session(request, me.user_id, family_id, "revoke")
    return Response(status_code=204)


async def logout(request: Request) -> Response:
    me = await require(request, "profile")
    if me.session_id is None:
        raise Problem(
            400, "an API key has no session; revoke the key instead", field="Authorization"
        )
    await revoke_session(request, me.user_id, me.session_id, "logout")
    return Response(status_code=204)


async def logout_all(request: Request) -> Response:
    me = await require(request, "profile")
    await revoke_all(request, me.user_id, "logout_all")
    return Response(status_code=204)


routes = [
    Route("/v1/me/sessions", list_sessions, methods=["GET"]),
    Route("/v1/me/sessions/{session_id}", delete_session, methods=["DELETE"]),
    Route("/v1/auth/logout", logout, methods=["POST"]),
    Route("/v1/auth/logout-all", logout_all, methods=["POST"]),
]
