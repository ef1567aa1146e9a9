"""API keys for server-to-server clients: ``mgw_<prefix>_<secret>``, shown once.

* ``POST /v1/me/api-keys {name, scopes, expires_in_days?}`` → 201 with the key, the only
  time it is shown; the log and the tables keep its SHA-256. The scopes must be ones the
  account's roles grant (an admin's key may carry ``catalog:write``); a key works only as
  long as its owner still holds them.
* ``GET /v1/me/api-keys``: the account's keys with their last use (kept in Redis, written
  at most once a minute per key).
* ``DELETE /v1/me/api-keys/{id}``: revoked at once in this process, within seconds in
  others (api/authn.py).

A key is made with a signed-in session, not with another key, and only once the account's
email is verified.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import forget_api_key, require
from api.context import ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.requests import read_json, reject_nul
from api.responses import Body, respond
from core.ids import new_id, utcnow
from domain.identity.opaque import new_api_key, token_hash
from domain.identity.roles import ALL_SCOPES, scopes_for
from projections.identity.account_data import api_key_of, api_keys_of
from projections.identity.accounts import user_by_id

MAX_KEYS = 50


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(default="", max_length=100)
    scopes: list[str] = Field(min_length=1, max_length=len(ALL_SCOPES))
    expires_in_days: int | None = Field(default=None, ge=1, le=3650)

    @field_validator("name")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        return reject_nul(v)  # type: ignore[no-any-return]


async def create_key(request: Request) -> Response:
    me = await require(request, "profile")
    if me.kind != "user":
        raise Problem(
            403, "create API keys from a signed-in session, not with a key", field="Authorization"
        )
    c = ctx(request)
    body = await read_json(request, KeyIn)
    unknown = sorted(set(body.scopes) - ALL_SCOPES)
    if unknown:
        raise Problem(422, f"scopes: unknown {', '.join(unknown)}", field="scopes")
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, me.user_id)
        existing = await api_keys_of(conn, me.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    if not user.email_verified:
        raise Problem(403, "verify your email before creating API keys", field="email")
    beyond = sorted(set(body.scopes) - scopes_for(user.roles))
    if beyond:
        raise Problem(403, f"scopes: your roles do not grant {', '.join(beyond)}", field="scopes")
    if sum(1 for k in existing if k.revoked_at is None) >= MAX_KEYS:
        raise Problem(409, f"at most {MAX_KEYS} active keys; revoke one first", field="scopes")
    key = new_api_key()
    key_id = new_id()
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "ApiKeyIssued",
            me.user_id,
            {
                "user_id": me.user_id,
                "key_id": key_id,
                "prefix": key.prefix,
                "secret_hash": token_hash(key.secret),
                "name": body.name,
                "scopes": sorted(set(body.scopes)),
                "expires_at": expires,
            },
        ),
    )
    if outcome != "ok":
        raise Problem(503, "the key could not be issued; retry", headers={"Retry-After": "1"})
    return respond(
        NewApiKey,
        {
            "id": key_id,
            "key": key.full,
            "prefix": key.prefix,
            "name": body.name,
            "scopes": sorted(set(body.scopes)),
            "expires_at": expires.isoformat() if expires else None,
            "note": "store the key now: it is not shown again",
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


class NewApiKey(Body):
    id: str
    key: str = Field(description="the whole key: shown this once")
    prefix: str
    name: str
    scopes: list[str]
    expires_at: datetime | None
    note: str


class ApiKey(Body):
    id: str
    prefix: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked: bool
    last_used_at: datetime | None


class ApiKeys(Body):
    items: list[ApiKey]


async def _last_used(c: Any, ids: list[str]) -> dict[str, str]:
    if not ids or c.stores.redis is None:
        return {}
    from datetime import UTC, datetime

    values = await c.stores.redis.hmget("mgw:apikey:last_used", ids)
    return {
        i: datetime.fromtimestamp(int(v), UTC).isoformat()
        for i, v in zip(ids, values, strict=True)
        if v is not None
    }


async def list_keys(request: Request) -> Response:
    me = await require(request, "profile")
    c = ctx(request)
    async with c.stores.pg.connection() as conn:
        keys = await api_keys_of(conn, me.user_id)
    used = await _last_used(c, [k.key_id for k in keys])
    return respond(ApiKeys, {"items": [k.public(used.get(k.key_id)) for k in keys]})


async def revoke_key(request: Request) -> Response:
    me = await require(request, "profile")
    c = ctx(request)
    key_id = request.path_params["key_id"]
    if len(key_id) > 64 or "\x00" in key_id:
        raise Problem(404, "no such API key", field="key_id")
    async with c.stores.pg.connection() as conn:
        key = await api_key_of(conn, me.user_id, key_id)
    if key is None:
        raise Problem(404, "no such API key", field="key_id")
    await decide(
        c,
        identity_event(
            request, "ApiKeyRevoked", me.user_id, {"user_id": me.user_id, "key_id": key_id}
        ),
    )
    forget_api_key(key.prefix)
    return Response(status_code=204)


routes = [
    Route("/v1/me/api-keys", list_keys, methods=["GET"]),
    Route("/v1/me/api-keys", create_key, methods=["POST"]),
    Route("/v1/me/api-keys/{key_id}", revoke_key, methods=["DELETE"]),
]
