"""The routes over a user's sessions: list them, end one, sign out here or everywhere.

Routes: ``GET /v1/me/sessions``, ``DELETE /v1/me/sessions/{id}``, ``POST /v1/auth/logout``
(this session), ``POST /v1/auth/logout-all`` (every session of the account). Starting,
rotating and revoking a session is api/identity/tokens.py.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import require
from api.context import ctx
from api.errors import Problem
from api.identity.tokens import revoke_all, revoke_session
from api.responses import Body, respond
from projections.identity.sessions import session_by_id, sessions_of


class Session(Body):
    id: str
    client_id: str
    method: str
    device_name: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked: bool
    current: bool = Field(description="the session this request was made with")


class Sessions(Body):
    items: list[Session]


async def list_sessions(request: Request) -> Response:
    me = await require(request, "profile")
    async with ctx(request).stores.pg.connection() as conn:
        items = await sessions_of(conn, me.user_id)
    return respond(
        Sessions,
        {"items": [{**s.public(), "current": s.family_id == me.session_id} for s in items]},
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
