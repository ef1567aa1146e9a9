"""What people do with titles in the apps, in batches: the recommender's implicit feedback.

``POST /v1/activity`` (a user token or key with the ``library`` scope)::

    {"events": [{"event_id": "e-1", "kind": "impression", "content_id": "c-9",
                 "surface": "home", "position": 3, "request_id": "r-7",
                 "occurred_at": "2026-12-04T20:00:00Z", "device_id": "tv"}]}

Up to 500 events; ``event_id`` is the client's (a repeat is recorded once, so a client
may resend a batch it is not sure arrived). Kinds: impression, click, detail_view,
trailer, share, not_interested, more_like_this, interest_restored (takes back a not
interested or more like this). Answers 202 with ``accepted`` and the
consistency token of the batch: ``GET /v1/me/recommendations`` with it reads them.
Each event is an ActivityRecorded on the ``activity`` topic, keyed by user, which an
analytics consumer can read (docs/recommendations.md).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import require
from api.context import accepted, ctx
from api.errors import Problem
from api.requests import INT32_MAX, read_json, reject_nul
from core.events import Event
from core.ids import utcnow

MAX_BATCH = 500
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
#: device clocks run a little fast; further ahead is a wrong clock
FUTURE_SLACK = timedelta(minutes=5)

Kind = Literal[
    "impression",
    "click",
    "detail_view",
    "trailer",
    "share",
    "not_interested",
    "more_like_this",
    "interest_restored",
]


class ActivityIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=128)
    kind: Kind
    content_id: str = Field(min_length=1, max_length=128)
    surface: str = Field(default="", max_length=64)
    position: int | None = Field(default=None, ge=1, le=INT32_MAX)
    request_id: str | None = Field(default=None, min_length=1, max_length=128)
    occurred_at: datetime | None = None
    device_id: str | None = Field(default=None, min_length=1, max_length=128)

    _nul = field_validator("event_id", "content_id", "surface", "request_id", "device_id")(
        reject_nul
    )

    @field_validator("occurred_at")
    @classmethod
    def _when(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return None
        if v.tzinfo is None:
            raise ValueError("needs a time zone (end it with Z for UTC)")
        if v < EARLIEST or v > utcnow() + FUTURE_SLACK:
            raise ValueError("must be after 2000 and not in the future (check the clock)")
        return v


class ActivityBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[ActivityIn] = Field(min_length=1, max_length=MAX_BATCH)


def activity_event(user_id: str, a: ActivityIn, now: datetime) -> Event:
    at = a.occurred_at or now
    return Event(
        "ActivityRecorded",
        user_id,
        {
            "user_id": user_id,
            "event_id": a.event_id,
            "kind": a.kind,
            "content_id": a.content_id,
            "surface": a.surface,
            "device_id": a.device_id,
            "position": a.position,
            "request_id": a.request_id,
            "occurred_at": at,
        },
        occurred_at=at,
        producer="mgw-api",
    )


async def record(request: Request) -> Response:
    user = (await require(request, "library")).user_id
    batch = await read_json(request, ActivityBatch)
    now = utcnow()
    seen: set[str] = set()
    for n, a in enumerate(batch.events):
        if a.event_id in seen:
            raise Problem(422, "repeats an event_id of this batch", field=f"events.{n}.event_id")
        seen.add(a.event_id)
    positions = await ctx(request).publisher.publish_many(
        [activity_event(user, a, now) for a in batch.events]
    )
    # one user's events share a partition, so the last position covers the whole batch
    return accepted(positions[-1], accepted=len(positions))


routes = [Route("/v1/activity", record, methods=["POST"])]
