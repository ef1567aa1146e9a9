"""The admin API over accounts: search, read, lock, roles, sessions, audit.

* ``GET /v1/admin/users?q=&limit=&cursor=`` (``users:read``): email or display-name
  substring, or an exact id; keyset pages ordered by id, ``next_cursor`` opaque.
* ``GET /v1/admin/users/{id}`` (``users:read``): the account, its roles and the scopes
  they grant, its active sessions.
* ``POST /v1/admin/users/{id}/lock {reason}``, ``POST .../unlock`` (``users:write``): the
  projector revokes every session on lock; this process refuses the account's access
  tokens from the next request on. An admin cannot lock themself.
* ``PUT``/``DELETE /v1/admin/users/{id}/roles/{role}`` (``users:write``): only an admin
  grants ``admin``; ``user`` cannot be removed; an admin cannot drop their own ``admin``
  (someone must be left to administer). Access tokens issued before a change are refused;
  the sessions live on, so a refresh picks up the new roles.
* ``POST /v1/admin/users/{id}/sessions/revoke`` (``users:write``): sign out everywhere.
* ``GET /v1/admin/audit?target=&action=&limit=&cursor=`` (``audit:read``): newest first.

Every change is an identity event carrying the admin as ``actor_id`` (and the ip and user
agent), decided by the identity projector (api/identity/commands.py ``decide``), so each
one is an audit row. Reads honour ``X-Consistency-Token`` for the identity projection.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import Principal, forget_api_key, require
from api.consistency import wait_for_token
from api.context import AppContext, ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.identity.tokens import revoke_all
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param, read_json, reject_nul
from domain.identity.roles import ADMIN, ROLES, USER, scopes_for
from projections.identity import audit
from projections.identity.account_data import api_keys_of
from projections.identity.accounts import HANDLERS, User, search_users, user_by_id
from projections.identity.sessions import sessions_of
from projections.registry import by_name

MAX_ID = 128
MAX_QUERY = 200
#: audit actions one may filter on: every identity event type
ACTIONS = frozenset(HANDLERS)
_BIGINT_MAX = 2**63 - 1


class LockIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: str = Field(min_length=1, max_length=500)

    @field_validator("reason")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        return reject_nul(v)  # type: ignore[no-any-return]


class UnlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- helpers ---------------------------------------------------------------------------


def _text_param(request: Request, name: str, max_len: int) -> str | None:
    raw = request.query_params.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    if len(raw) > max_len:
        raise Problem(422, f"{name} must be at most {max_len} characters", field=name)
    try:
        reject_nul(raw)
        raw.encode("utf-8")
    except (ValueError, UnicodeError):
        raise Problem(422, f"{name} must be text without NUL characters", field=name) from None
    return raw or None


def _user_id(request: Request) -> str:
    user_id: str = request.path_params["id"]
    if not user_id or len(user_id) > MAX_ID or "\x00" in user_id:
        raise Problem(404, "no such user", field="id")
    return user_id


async def _wait(request: Request, c: AppContext) -> None:
    await wait_for_token(request, c.stores.pg, [by_name("identity")], c.settings.consistency_wait_s)


async def _load(c: AppContext, user_id: str) -> User:
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, user_id)
    if user is None:
        raise Problem(404, "no such user", field="id")
    return user


async def _optional_body(request: Request, model: type[UnlockIn]) -> None:
    """A body is optional; when one is sent it must be a JSON object the model accepts."""
    if await request.body():
        await read_json(request, model)


async def _command(
    request: Request, admin: Principal, event_type: str, payload: dict[str, Any]
) -> None:
    """Append an identity event as ``admin`` and wait until the projector decided it."""
    c = ctx(request)
    outcome, detail = await decide(
        c, identity_event(request, event_type, payload["user_id"], payload, actor=admin.user_id)
    )
    if outcome != "ok":
        field = str(detail.get("field") or "id")
        raise Problem(409, f"{event_type} was refused ({outcome})", field=field)


async def _after_change(c: AppContext, user_id: str) -> None:
    """Make this process see the change at once: revoked tokens, and API keys whose owner's
    state (locked, roles) it may hold for a few seconds."""
    await c.identity.revocations.refresh()
    async with c.stores.pg.connection() as conn:
        keys = await api_keys_of(conn, user_id)
    for key in keys:
        forget_api_key(key.prefix)


def _detail(user: User) -> dict[str, Any]:
    return {
        **user.public(),
        "roles": list(user.roles),
        "scopes": sorted(scopes_for(user.roles)),
    }


# -- reads -----------------------------------------------------------------------------


async def list_users(request: Request) -> Response:
    await require(request, "users:read")
    c = ctx(request)
    q = _text_param(request, "q", MAX_QUERY) or ""
    limit = int_param(request, "limit", 20, 1, 100)
    raw_cursor = request.query_params.get("cursor")
    after = decode_cursor(raw_cursor, [str])[0] if raw_cursor else None
    await _wait(request, c)
    async with c.stores.pg.connection() as conn:
        found = await search_users(conn, q, limit=limit + 1, after=after)
    page = found[:limit]
    more = len(found) > limit
    return JSONResponse(
        {
            "items": [u.public() for u in page],
            "next_cursor": encode_cursor([page[-1].user_id]) if more and page else None,
        }
    )


async def get_user(request: Request) -> Response:
    await require(request, "users:read")
    c = ctx(request)
    user_id = _user_id(request)
    await _wait(request, c)
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, user_id)
        sessions = await sessions_of(conn, user_id) if user else []
    if user is None:
        raise Problem(404, "no such user", field="id")
    return JSONResponse({**_detail(user), "sessions": [s.public() for s in sessions]})


# -- lock ------------------------------------------------------------------------------


async def lock_user(request: Request) -> Response:
    admin = await require(request, "users:write")
    c = ctx(request)
    user_id = _user_id(request)
    body = await read_json(request, LockIn)
    if user_id == admin.user_id:
        raise Problem(409, "you cannot lock your own account", field="id")
    await _load(c, user_id)
    await _command(request, admin, "UserLocked", {"user_id": user_id, "reason": body.reason})
    await _after_change(c, user_id)
    return JSONResponse(_detail(await _load(c, user_id)))


async def unlock_user(request: Request) -> Response:
    admin = await require(request, "users:write")
    c = ctx(request)
    user_id = _user_id(request)
    await _optional_body(request, UnlockIn)
    await _load(c, user_id)
    await _command(request, admin, "UserUnlocked", {"user_id": user_id})
    await _after_change(c, user_id)
    return JSONResponse(_detail(await _load(c, user_id)))


# -- roles -----------------------------------------------------------------------------


def _role(request: Request) -> str:
    role: str = request.path_params["role"]
    if role not in ROLES:
        shown = role if len(role) <= 64 and role.isprintable() else "that"
        raise Problem(
            422, f"role: unknown role {shown!r}; known roles: {', '.join(ROLES)}", field="role"
        )
    return role


async def grant_role(request: Request) -> Response:
    admin = await require(request, "users:write")
    c = ctx(request)
    user_id = _user_id(request)
    role = _role(request)
    if role == ADMIN and ADMIN not in admin.roles:
        raise Problem(403, "only an admin may grant the admin role", field="role")
    user = await _load(c, user_id)
    if role in user.roles:  # nothing changes: no event, no token invalidated
        return JSONResponse(_detail(user))
    await _command(request, admin, "RoleGranted", {"user_id": user_id, "role": role})
    await _after_change(c, user_id)
    return JSONResponse(_detail(await _load(c, user_id)))


async def revoke_role(request: Request) -> Response:
    admin = await require(request, "users:write")
    c = ctx(request)
    user_id = _user_id(request)
    role = _role(request)
    if role == USER:
        raise Problem(422, "role: every account keeps the user role", field="role")
    if role == ADMIN and user_id == admin.user_id:
        raise Problem(409, "you cannot remove your own admin role; ask another admin", field="role")
    user = await _load(c, user_id)
    if role not in user.roles:
        return JSONResponse(_detail(user))
    await _command(request, admin, "RoleRevoked", {"user_id": user_id, "role": role})
    await _after_change(c, user_id)
    return JSONResponse(_detail(await _load(c, user_id)))


# -- sessions --------------------------------------------------------------------------


async def revoke_sessions(request: Request) -> Response:
    admin = await require(request, "users:write")
    c = ctx(request)
    user_id = _user_id(request)
    await _optional_body(request, UnlockIn)
    await _load(c, user_id)
    await revoke_all(request, user_id, "admin", actor=admin.user_id)
    return Response(status_code=204)


# -- audit -----------------------------------------------------------------------------


async def list_audit(request: Request) -> Response:
    await require(request, "audit:read")
    c = ctx(request)
    target = _text_param(request, "target", MAX_ID)
    action = _text_param(request, "action", 64)
    if action is not None and action not in ACTIONS:
        raise Problem(422, "action: not an identity event type", field="action")
    limit = int_param(request, "limit", 50, 1, 200)
    raw_cursor = request.query_params.get("cursor")
    before: int | None = None
    if raw_cursor:
        before = decode_cursor(raw_cursor, [int])[0]
        if isinstance(before, bool) or not 0 < before <= _BIGINT_MAX:
            raise Problem(422, "cursor is not one this API returned", field="cursor")
    await _wait(request, c)
    async with c.stores.pg.connection() as conn:
        rows = await audit.entries(
            conn, target_id=target, action=action, before=before, limit=limit + 1
        )
    page = rows[:limit]
    more = len(rows) > limit
    return JSONResponse(
        {
            "items": [r.public() for r in page],
            "next_cursor": encode_cursor([page[-1].offset]) if more and page else None,
        }
    )


routes = [
    Route("/v1/admin/users", list_users, methods=["GET"]),
    Route("/v1/admin/users/{id}", get_user, methods=["GET"]),
    Route("/v1/admin/users/{id}/lock", lock_user, methods=["POST"]),
    Route("/v1/admin/users/{id}/unlock", unlock_user, methods=["POST"]),
    Route("/v1/admin/users/{id}/roles/{role}", grant_role, methods=["PUT"]),
    Route("/v1/admin/users/{id}/roles/{role}", revoke_role, methods=["DELETE"]),
    Route("/v1/admin/users/{id}/sessions/revoke", revoke_sessions, methods=["POST"]),
    Route("/v1/admin/audit", list_audit, methods=["GET"]),
]
