"""Who is calling, and may they: bearer access tokens and API keys → ``Principal``.

Every route that reads or writes user data calls ``require(request, scope)``; it answers
401 (no or bad credentials, RFC 6750 ``WWW-Authenticate``) or 403 (a scope the caller
lacks). Two credentials are accepted:

* ``Authorization: Bearer <access token>``: an ES256 JWT of this server; its session must
  not be revoked (api/identity/services.py keeps revocations in memory);
* ``Authorization: Bearer mgw_<prefix>_<secret>`` or ``X-Api-Key: mgw_...``: an API key,
  found by prefix, its secret compared in constant time. Its scopes are the key's scopes
  that its owner's roles still grant.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from api.context import ctx
from api.errors import Problem
from domain.identity.opaque import parse_api_key, same, token_hash
from domain.identity.roles import scopes_for
from domain.identity.tokens import InvalidToken
from projections.identity.account_data import ApiKey, api_key_by_prefix
from projections.identity.accounts import user_by_id

#: how long a process trusts an API key row it read (revocations by this process are
#: forgotten at once; by another process within this time)
API_KEY_CACHE_S = 5.0
_LAST_USED_EVERY_S = 60.0


@dataclass(frozen=True, slots=True)
class Principal:
    user_id: str
    roles: tuple[str, ...]
    scopes: frozenset[str]
    kind: str  # "user" (access token) | "api_key"
    session_id: str | None = None
    key_id: str | None = None
    client_id: str | None = None
    amr: tuple[str, ...] = ()

    def has(self, scope: str) -> bool:
        return scope in self.scopes


def _challenge(error: str, description: str, scope: str | None = None) -> dict[str, str]:
    value = f'Bearer realm="mgw", error="{error}", error_description="{description}"'
    if scope:
        value += f', scope="{scope}"'
    return {"WWW-Authenticate": value}


def unauthorized(description: str) -> Problem:
    return Problem(
        401,
        description,
        field="Authorization",
        headers=_challenge("invalid_token", description),
    )


def _credential(request: Request) -> str | None:
    header = request.headers.get("Authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthorized("use Authorization: Bearer <access token or API key>")
        return value.strip()
    key = request.headers.get("X-Api-Key")
    return key.strip() if key else None


async def authenticate(request: Request) -> Principal | None:
    """The caller, None when no credential was sent; 401 for a credential that fails."""
    cached = request.scope.get("mgw.principal")
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    raw = _credential(request)
    if raw is None:
        return None
    if len(raw) > 4096:
        raise unauthorized("credential too long")
    principal = await (_api_key(request, raw) if raw.startswith("mgw_") else _access(request, raw))
    request.scope["mgw.principal"] = principal
    return principal


async def _access(request: Request, token: str) -> Principal:
    ident = ctx(request).identity
    try:
        claims = ident.verifier.verify(token)
    except InvalidToken as exc:
        raise unauthorized(f"access token refused: {exc.reason}") from None
    if ident.revocations.refuses(claims):
        raise unauthorized("access token refused: the session was revoked")
    return Principal(
        user_id=claims.subject,
        roles=claims.roles,
        scopes=claims.scope & scopes_for(claims.roles),
        kind="user",
        session_id=claims.session_id,
        client_id=claims.client_id,
        amr=tuple(claims.amr),
    )


# API key rows read recently, by prefix: (read at, row, owner roles, owner locked)
_KEYS: dict[str, tuple[float, ApiKey | None, tuple[str, ...], bool]] = {}
_LAST_USED: dict[str, float] = {}


def forget_api_key(prefix: str) -> None:
    _KEYS.pop(prefix, None)


async def _api_key(request: Request, raw: str) -> Principal:
    parsed = parse_api_key(raw)
    if parsed is None:
        raise unauthorized("API key refused: malformed")
    prefix, secret = parsed
    c = ctx(request)
    now = time.monotonic()
    hit = _KEYS.get(prefix)
    if hit is None or now - hit[0] > API_KEY_CACHE_S:
        async with c.stores.pg.connection() as conn:
            key = await api_key_by_prefix(conn, prefix)
            owner = await user_by_id(conn, key.user_id) if key else None
        hit = (now, key, owner.roles if owner else (), bool(owner is None or owner.locked))
        _KEYS[prefix] = hit
        if len(_KEYS) > 10_000:
            _KEYS.clear()
    _, key, roles, locked = hit
    # the hash is compared even for an unknown prefix, so timing tells nothing
    expected = key.secret_hash if key else "0" * 64
    if not same(token_hash(secret), expected) or key is None:
        raise unauthorized("API key refused")
    if key.revoked_at is not None:
        raise unauthorized("API key refused: revoked")
    if key.expires_at is not None and key.expires_at.timestamp() <= time.time():
        raise unauthorized("API key refused: expired")
    if locked:
        raise unauthorized("API key refused: the owner's account is locked")
    await _touch(c, key.key_id)
    return Principal(
        user_id=key.user_id,
        roles=roles,
        scopes=frozenset(key.scopes) & scopes_for(roles),
        kind="api_key",
        key_id=key.key_id,
    )


async def _touch(c: Any, key_id: str) -> None:
    """Last-used time, in Redis: a write per minute per key, not per request."""
    now = time.time()
    if now - _LAST_USED.get(key_id, 0.0) < _LAST_USED_EVERY_S or c.stores.redis is None:
        return
    _LAST_USED[key_id] = now
    try:
        await c.stores.redis.hset("mgw:apikey:last_used", key_id, int(now))
    except Exception:  # last-used is informative: never fail a request for it
        return


async def require(request: Request, scope: str) -> Principal:
    principal = await authenticate(request)
    if principal is None:
        raise Problem(
            401,
            "sign in: send Authorization: Bearer <access token> (POST /oauth/token) or an API key",
            field="Authorization",
            headers={"WWW-Authenticate": 'Bearer realm="mgw"'},
        )
    if not principal.has(scope):
        raise Problem(
            403,
            f"this needs the {scope!r} scope",
            field="Authorization",
            headers=_challenge("insufficient_scope", f"needs {scope}", scope),
        )
    return principal


async def optional(request: Request) -> Principal | None:
    return await authenticate(request)
