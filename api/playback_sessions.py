"""Streaming sessions: start, heartbeat, stop, with a concurrent-stream limit per account.

A start appends PlaybackSessionStarted and waits for the sessions projector, which decides
in log order whether the account is under its limit; past it, the answer is 409 naming
the devices streaming now. Each call also reports the position (PlaybackStarted,
PlaybackProgressed, PlaybackStopped), so continue-watching and history follow the stream.
A device that stops beating is ended by the sweeper (projections/playback_sessions.py).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import wait_until_covered
from api.context import ctx
from api.errors import Problem
from api.requests import read_json, reject_nul
from api.responses import Body, respond
from core.events import Event
from core.ids import new_id, utcnow
from domain.playback import MISSED_HEARTBEATS, check_position
from projections.playback_sessions import active_sessions, session_state


class _Base(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    @field_validator("*")
    @classmethod
    def _clean(cls, v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return reject_nul(v)


class StartIn(_Base):
    content_id: str = Field(min_length=1, max_length=128)
    device_id: str = Field(min_length=1, max_length=128)
    position_s: float = Field(default=0.0, ge=0)
    duration_s: float | None = Field(default=None, gt=0)


class BeatIn(_Base):
    position_s: float = Field(ge=0)
    duration_s: float | None = Field(default=None, gt=0)


class LimitIn(_Base):
    max_streams: int = Field(ge=1, le=100)


def _position(
    kind: str, user: str, content_id: str, device_id: str, pos: float, dur: float | None
) -> Event:
    violation = check_position(pos, dur)
    if violation:
        raise Problem(422, f"{violation.field}: {violation.message}", field=violation.field)
    now = utcnow()
    return Event(
        kind,
        user,
        {
            "user_id": user,
            "content_id": content_id,
            "device_id": device_id,
            "position_s": pos,
            "duration_s": dur,
            "occurred_at": now,
        },
        occurred_at=now,
        producer="api",
    )


class SessionStarted(Body):
    session_id: str
    heartbeat_s: float = Field(description="send a heartbeat at least this often")
    expires_after_s: float = Field(description="the session ends after this long without one")


class ActiveSession(Body):
    session_id: str
    device_id: str
    content_id: str
    started_at: datetime
    last_heartbeat: datetime


class ActiveSessions(Body):
    items: list[ActiveSession]


class HeartbeatTaken(Body):
    session_id: str
    heartbeat_s: float


class SessionEnded(Body):
    session_id: str
    state: Literal["ended"]


class StreamLimit(Body):
    user_id: str
    max_streams: int


def _active_body(sessions: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "session_id": s.session_id,
            "device_id": s.device_id,
            "content_id": s.content_id,
            "started_at": s.started_at.isoformat(),
            "last_heartbeat": s.last_heartbeat.isoformat(),
        }
        for s in sessions
    ]


async def start_session(request: Request) -> Response:
    me = await require(request, "playback")
    user = me.user_id
    c = ctx(request)
    body = await read_json(request, StartIn)
    position = _position(
        "PlaybackStarted", user, body.content_id, body.device_id, body.position_s, body.duration_s
    )
    sid = new_id()
    now = utcnow()
    started = Event(
        "PlaybackSessionStarted",
        user,
        {
            "session_id": sid,
            "user_id": user,
            "device_id": body.device_id,
            "content_id": body.content_id,
            "heartbeat_s": c.settings.heartbeat_s,
            "default_max_streams": c.settings.max_streams,
            "occurred_at": now,
            "auth_session": me.session_id,
        },
        occurred_at=now,
        producer="api",
    )
    pos = await c.publisher.publish(started)
    if not await wait_until_covered(c.stores.pg, ["sessions"], pos, c.settings.consistency_wait_s):
        raise Problem(503, "the session could not be decided in time; retry",
                      headers={"Retry-After": "1"})  # fmt: skip
    state = await session_state(c.stores.pg, sid)
    if state is None or state[1] != "active":
        active = await active_sessions(c.stores.pg, user)
        devices = ", ".join(sorted({s.device_id for s in active})) or "other devices"
        return JSONResponse(
            {
                "type": "about:blank",
                "title": "Conflict",
                "status": 409,
                "detail": f"this account already streams on {len(active)} devices ({devices});"
                " stop one of them to start here",
                "field": "device_id",
                "active": _active_body(active),
            },
            status_code=409,
            media_type="application/problem+json",
        )
    await c.publisher.publish(position)
    return respond(
        SessionStarted,
        {
            "session_id": sid,
            "heartbeat_s": c.settings.heartbeat_s,
            "expires_after_s": c.settings.heartbeat_s * MISSED_HEARTBEATS,
        },
        status=201,
        headers={"X-Consistency-Token": pos.token()},
    )


async def _own_active(request: Request, user: str) -> str:
    sid: str = request.path_params["session_id"]
    state = await session_state(ctx(request).stores.pg, sid)
    if state is None or state[0] != user:
        raise Problem(404, "no such session", field="session_id")
    if state[1] != "active":
        raise Problem(
            409, "this session has ended (stopped, or three heartbeats missed); start a new one",
            field="session_id",
        )  # fmt: skip
    return sid


async def _session_content(request: Request, sid: str) -> tuple[str, str]:
    async with ctx(request).stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT content_id, device_id FROM playback_sessions WHERE session_id = %s", (sid,)
        )
        row = await cur.fetchone()
    assert row is not None
    return row[0], row[1]


async def _report(request: Request, kind: str, session_event: str, **extra: Any) -> tuple[str, Any]:
    """A running session's heartbeat or stop: the session event and the position it
    carries, appended together; returns the session id and the session event's position."""
    user = (await require(request, "playback")).user_id
    c = ctx(request)
    body = await read_json(request, BeatIn)
    sid = await _own_active(request, user)
    content_id, device_id = await _session_content(request, sid)
    position = _position(kind, user, content_id, device_id, body.position_s, body.duration_s)
    now = utcnow()
    event = Event(
        session_event,
        user,
        {"session_id": sid, "user_id": user, **extra, "occurred_at": now},
        occurred_at=now,
        producer="api",
    )
    positions = await c.publisher.publish_many([event, position])
    return sid, positions[0]


async def heartbeat(request: Request) -> Response:
    sid, _ = await _report(request, "PlaybackProgressed", "PlaybackSessionHeartbeat")
    body = {"session_id": sid, "heartbeat_s": ctx(request).settings.heartbeat_s}
    return respond(HeartbeatTaken, body, 202)


async def stop_session(request: Request) -> Response:
    sid, pos = await _report(request, "PlaybackStopped", "PlaybackSessionEnded", reason="stopped")
    return respond(
        SessionEnded,
        {"session_id": sid, "state": "ended"},
        status=202,
        headers={"X-Consistency-Token": pos.token()},
    )


async def list_sessions(request: Request) -> Response:
    user = (await require(request, "playback")).user_id
    active = await active_sessions(ctx(request).stores.pg, user)
    return respond(ActiveSessions, {"items": _active_body(active)})


async def set_stream_limit(request: Request) -> Response:
    admin = await require(request, "users:write")
    c = ctx(request)
    body = await read_json(request, LimitIn)
    user_id: str = request.path_params["user_id"]
    now = utcnow()
    pos = await c.publisher.publish(
        Event(
            "StreamLimitSet",
            user_id,
            {
                "user_id": user_id,
                "max_streams": body.max_streams,
                "set_by": admin.user_id,
                "occurred_at": now,
            },
            occurred_at=now,
            producer="api",
        )
    )
    await wait_until_covered(c.stores.pg, ["sessions"], pos, c.settings.consistency_wait_s)
    return respond(
        StreamLimit,
        {"user_id": user_id, "max_streams": body.max_streams},
        headers={"X-Consistency-Token": pos.token()},
    )


routes = [
    Route("/v1/playback/sessions", start_session, methods=["POST"]),
    Route("/v1/playback/sessions", list_sessions, methods=["GET"]),
    Route("/v1/playback/sessions/{session_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/v1/playback/sessions/{session_id}/stop", stop_session, methods=["POST"]),
    Route("/v1/admin/users/{user_id}/stream-limit", set_stream_limit, methods=["PUT"]),
]
