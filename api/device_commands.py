"""Remote commands: ask one of my devices to play, pause, resume, seek, stop or cast.

``POST /v1/me/devices/{device_id}/commands`` appends ``DeviceCommandIssued`` and answers
202 with the command id; the command reaches the device over its socket (now, or when
it next connects, until the deadline), the device acknowledges it, and
``GET /v1/me/commands/{id}`` tells ``queued``, ``delivered``, ``acked`` or ``expired``.
A device is one of my signed-in sessions (``GET /v1/me/devices``) or a device id one
of my sockets announced; anything else, another user's device included, is 404.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import wait_for_token
from api.context import accepted, ctx
from api.errors import Problem
from api.realtime_hub import online
from api.requests import read_json, reject_nul
from core.events import Event
from core.ids import new_id, to_millis, utcnow
from domain.realtime import DEFAULT_TTL_S, check_command, valid_device_id
from projections.device_commands import command_by_id
from projections.identity.sessions import session_by_id
from projections.registry import by_name

SCOPE = "playback"


class CommandIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    command: str = Field(max_length=16)
    content_id: str | None = Field(default=None, min_length=1, max_length=128)
    position_s: float | None = None
    ttl_s: float | None = None

    @field_validator("content_id", "command")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        return reject_nul(v)

    @field_validator("position_s", "ttl_s")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


async def _target(request: Request, user_id: str) -> str:
    """The device id when it is mine: a live sign-in, or a socket of mine now."""
    device_id: str = request.path_params["device_id"]
    if not valid_device_id(device_id):
        raise Problem(404, "no such device", field="device_id")
    c = ctx(request)
    async with c.stores.pg.connection() as conn:
        session = await session_by_id(conn, device_id)
    if session is not None and session.user_id == user_id and session.revoked_at is None:
        return device_id
    if c.stores.redis is not None and any(
        e["device_id"] == device_id for e in await online(c.stores.redis, user_id)
    ):
        return device_id
    raise Problem(404, "no such device", field="device_id")


async def post_command(request: Request) -> Response:
    me = await require(request, SCOPE)
    body = await read_json(request, CommandIn)
    device_id = await _target(request, me.user_id)
    violation = check_command(body.command, body.content_id, body.position_s, body.ttl_s)
    if violation:
        raise Problem(422, violation.message, field=violation.field)
    c = ctx(request)
    if body.content_id is not None:
        async with c.stores.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM content WHERE content_id = %s", (body.content_id,)
            )
            if await cur.fetchone() is None:
                raise Problem(404, "no such title", field="content_id")
    ttl = body.ttl_s or c.settings.command_ttl_s or DEFAULT_TTL_S
    now = utcnow()
    command_id = new_id()
    pos = await c.publisher.publish(
        Event(
            "DeviceCommandIssued",
            me.user_id,
            {
                "command_id": command_id,
                "user_id": me.user_id,
                "device_id": device_id,
                "command": body.command,
                "content_id": body.content_id,
                "position_s": body.position_s,
                "from_device": me.session_id,
                "expires_at_ms": to_millis(now) + int(ttl * 1000),
            },
            occurred_at=now,
            producer="api",
        )
    )
    return accepted(pos, command_id=command_id, status="queued")


async def get_command(request: Request) -> Response:
    me = await require(request, SCOPE)
    c = ctx(request)
    await wait_for_token(
        request, c.stores.pg, [by_name("device_commands")], c.settings.consistency_wait_s
    )
    command_id: str = request.path_params["command_id"]
    if len(command_id) > 64 or "\x00" in command_id:
        raise Problem(404, "no such command", field="command_id")
    async with c.stores.pg.connection() as conn:
        cmd = await command_by_id(conn, command_id)
    if cmd is None or cmd.user_id != me.user_id:
        raise Problem(404, "no such command", field="command_id")
    return JSONResponse(cmd.as_dict())


routes = [
    Route("/v1/me/devices/{device_id}/commands", post_command, methods=["POST"]),
    Route("/v1/me/commands/{command_id}", get_command, methods=["GET"]),
]
