"""Playback routes: report progress from a device, read continue-watching."""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import require
from api.consistency import wait_for_token
from api.context import accepted, ctx
from api.errors import Problem
from api.requests import int_param, read_json, reject_nul
from api.responses import Body, Page, respond
from core.events import Event
from core.ids import utcnow
from domain.playback import EVENT_KINDS, check_position
from projections.playback import continue_watching, continue_watching_from_table
from projections.registry import by_name


class PlaybackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    content_id: str = Field(min_length=1, max_length=128)
    device_id: str = Field(min_length=1, max_length=128)
    kind: Literal["start", "progress", "stop"]
    position_s: float = Field(ge=0)
    duration_s: float | None = Field(default=None, gt=0)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        return reject_nul(v)

    @field_validator("position_s", "duration_s")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


async def post_playback_event(request: Request) -> Response:
    user = (await require(request, "playback")).user_id
    body = await read_json(request, PlaybackIn)
    violation = check_position(body.position_s, body.duration_s)
    if violation:
        raise Problem(422, f"{violation.field}: {violation.message}", field=violation.field)
    now = utcnow()
    payload = {
        "user_id": user,
        "content_id": body.content_id,
        "device_id": body.device_id,
        "position_s": body.position_s,
        "duration_s": body.duration_s,
        "occurred_at": now,
    }
    event = Event(
        EVENT_KINDS[body.kind],
        user,
        payload,
        occurred_at=now,
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )
    return accepted(await ctx(request).publisher.publish(event))


def _encode_cursor(cur: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{cur[0]}:{cur[1]}".encode()).decode().rstrip("=")


def _decode_cursor(raw: str) -> tuple[int, str]:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        ms, cid = text.split(":", 1)
        return int(ms), cid
    except (ValueError, UnicodeDecodeError):
        raise Problem(422, "cursor is not one this API returned", field="cursor") from None


class InProgress(Body):
    content_id: str
    title: str | None
    position_s: float
    duration_s: float | None
    progress: float | None = Field(description="position over duration; null without one")
    updated_at: datetime


class ContinueWatching(Page):
    items: list[InProgress]
    degraded: bool = Field(
        default=False,
        description="true while Redis is unreachable: the page was read from PostgreSQL "
        "(same items and order; slower)",
    )


async def get_continue_watching(request: Request) -> Response:
    user = (await require(request, "playback")).user_id
    c = ctx(request)
    limit = int_param(request, "limit", 20, 1, 100)
    raw_cursor = request.query_params.get("cursor")
    before = _decode_cursor(raw_cursor) if raw_cursor else None
    await wait_for_token(
        request,
        c.stores.pg,
        [by_name("playback"), by_name("catalog")],
        c.settings.consistency_wait_s,
    )
    degraded = False
    try:
        items, nxt = await continue_watching(
            c.stores.redis, c.stores.pg, user, limit=limit, before=before
        )
    except (RedisConnectionError, RedisTimeoutError):
        # Redis is a copy kept from playback_positions: serve the page from the table
        degraded = True
        items, nxt = await continue_watching_from_table(
            c.stores.pg, user, limit=limit, before=before
        )
    return respond(
        ContinueWatching,
        {
            "items": [
                {
                    "content_id": i.content_id,
                    "title": i.title,
                    "position_s": i.position_s,
                    "duration_s": i.duration_s,
                    "progress": round(i.progress, 4) if i.progress else None,
                    "updated_at": i.updated_at.isoformat(),
                }
                for i in items
            ],
            "next_cursor": _encode_cursor(nxt) if nxt else None,
            "degraded": degraded,
        },
    )


routes = [
    Route("/v1/playback/events", post_playback_event, methods=["POST"]),
    Route("/v1/me/continue-watching", get_continue_watching, methods=["GET"]),
]
