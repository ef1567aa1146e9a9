"""Search analytics: clicks in, top queries and click-through out.

Routes:

* ``POST /v1/search/clicks`` ``{"search_id", "content_id", "position"}`` (a bearer token
  optional: the click is then the user's): appends SearchResultClicked, 202 with the position
  (``X-Consistency-Token``).
* ``GET /v1/admin/search/analytics?from=YYYY-MM-DD&to=YYYY-MM-DD&limit=20`` (``analytics:read``
  scope): UTC days, both inclusive; ``to`` defaults to today and ``from`` to six
  days before ``to`` (a week); at most 366 days.

**For the search route:** ``publish_search(ctx, search_id=..., ...)`` appends
SearchPerformed. It is meant to run as a Starlette ``BackgroundTask`` after the response
is sent, so it never raises: a failure is logged and it returns None (analytics are
best effort; the user already has the answer). It returns the event's position
otherwise. ``search_performed_event(...)`` builds the same event without appending it.
Because the event is appended after the response, a fast client's click can reach the
log before its search; the projection then counts it as a click on an unseen search
(see projections/search_analytics.py).
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import optional, require
from api.consistency import wait_for_token
from api.context import AppContext, accepted, ctx
from api.errors import Problem
from api.requests import INT32_MAX, int_param, read_json, reject_nul
from core.events import Event
from core.ids import utcnow
from projections.registry import by_name
from projections.search_analytics import search_report
from streams.log import Position

log = logging.getLogger("mgw.api.search_analytics")

PROJECTOR = "search_analytics"
MAX_RANGE_DAYS = 366
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# -- publishing searches ------------------------------------------------------


def search_performed_event(
    *,
    search_id: str,
    query: str,
    normalized_query: str,
    filters: Mapping[str, Any] | str,
    result_count: int,
    result_ids: Sequence[str],
    profile: str,
    profile_version: int,
    latency_ms: float,
    degraded: bool,
    user_id: str | None = None,
    at: datetime | None = None,
    correlation_id: str | None = None,
) -> Event:
    """The SearchPerformed event, keyed by ``search_id``. ``filters`` is a mapping (written
    as compact JSON with sorted keys) or JSON text already; ``result_ids`` are the first
    page's content ids in the order shown; ``at`` defaults to now. ValueError on values
    the schema or the projection cannot take."""
    if not search_id or len(search_id) > 128:
        raise ValueError("search_id must be 1-128 characters")
    if not 0 <= result_count <= INT32_MAX:
        raise ValueError("result_count must be between 0 and 2^31-1")
    if not math.isfinite(latency_ms) or latency_ms < 0:
        raise ValueError("latency_ms must be a finite number >= 0")
    text = filters if isinstance(filters, str) else _json(filters)
    reject_nul([search_id, normalized_query])  # ValueError: PostgreSQL text cannot hold NUL
    when = at or utcnow()
    payload = {
        "search_id": search_id,
        "query": query,
        "normalized_query": normalized_query,
        "filters": text,
        "result_count": result_count,
        "result_ids": list(result_ids),
        "profile": profile,
        "profile_version": profile_version,
        "latency_ms": float(latency_ms),
        "degraded": degraded,
        "user_id": user_id,
        "at": when,
    }
    return Event(
        "SearchPerformed",
        search_id,
        payload,
        occurred_at=when,
        correlation_id=correlation_id,
        producer="api",
    )


def _json(filters: Mapping[str, Any]) -> str:
    return json.dumps(filters, sort_keys=True, separators=(",", ":"), default=str)


async def publish_search(c: AppContext, **fields: Any) -> Position | None:
    """Append SearchPerformed built from ``fields`` (the keywords of
    ``search_performed_event``); the position, or None (logged) if it could not be."""
    try:
        return await c.publisher.publish(search_performed_event(**fields))
    except Exception:  # a background task: nobody is left to answer to
        log.exception("search %s: SearchPerformed not appended", fields.get("search_id"))
        return None


# -- routes ------------------------------------------------------------------


class ClickIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    search_id: str = Field(min_length=1, max_length=128)
    content_id: str = Field(min_length=1, max_length=128)
    #: 1-based position in the whole result list
    position: int = Field(ge=1, le=10_000, strict=True)

    @field_validator("search_id", "content_id")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        return reject_nul(v)  # type: ignore[no-any-return]


async def post_click(request: Request) -> Response:
    principal = await optional(request)
    user = principal.user_id if principal else None
    body = await read_json(request, ClickIn)
    now = utcnow()
    event = Event(
        "SearchResultClicked",
        body.search_id,
        {
            "search_id": body.search_id,
            "content_id": body.content_id,
            "position": body.position,
            "user_id": user,
            "at": now,
        },
        occurred_at=now,
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )
    return accepted(await ctx(request).publisher.publish(event))


def _date_param(request: Request, name: str) -> date | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return None
    try:
        if not _DATE.match(raw):
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise Problem(422, f"{name} must be a date like 2026-03-01", field=name) from None


async def get_analytics(request: Request) -> Response:
    await require(request, "analytics:read")
    c = ctx(request)
    end = _date_param(request, "to") or datetime.now(UTC).date()
    start = _date_param(request, "from") or end - timedelta(days=6)
    if start > end:
        raise Problem(422, "from must not be after to", field="from")
    days = (end - start).days + 1
    if days > MAX_RANGE_DAYS:
        raise Problem(422, f"the range spans {days} days; at most {MAX_RANGE_DAYS}", field="to")
    limit = int_param(request, "limit", 20, 1, 100)
    await wait_for_token(request, c.stores.pg, [by_name(PROJECTOR)], c.settings.consistency_wait_s)
    report = await search_report(c.stores.pg, start, end, limit=limit)
    return JSONResponse(
        {
            "from": report.start.isoformat(),
            "to": report.end.isoformat(),
            "totals": report.totals.as_dict(),
            "top_queries": [q.as_dict() for q in report.top_queries],
            "zero_result_queries": [q.as_dict() for q in report.zero_result_queries],
            "ctr_by_position": [p.as_dict() for p in report.ctr_by_position],
        }
    )


routes: list[Route] = [
    Route("/v1/search/clicks", post_click, methods=["POST"]),
    Route("/v1/admin/search/analytics", get_analytics, methods=["GET"]),
]
