"""Catalog moderation: users report titles, admins work the queue (docs/moderation.md).

- ``POST /v1/content/{content_id}/reports`` (signed in, ``library`` scope; rule
  ``report``, 10 an hour per address and account): ``{"reason", "note"}`` → 202.
- ``GET /v1/admin/moderation`` (``moderation:read``): the queue, ``status`` ``open``
  (default), ``hidden`` or ``all``, keyset-paged by content id.
- ``GET /v1/admin/moderation/{content_id}``: one title's flags, reports and decisions.
- ``POST /v1/admin/moderation/{content_id}/decisions`` (``moderation:write``):
  ``{"action": "approve" | "edit" | "hide" | "unhide", "note", "fields"}``. An edit also
  appends the canonical fields as an editorial ``ContentUpserted`` over the title's
  current ones, which precede every platform's (docs/catalog.md); its position is
  ``edit_position`` in the answer.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import wait_for_token
from api.context import accepted, ctx
from api.errors import Problem
from api.pagination import decode_cursor, encode_cursor
from api.ratelimit import limit as rate_limit
from api.requests import INT32_MAX, int_param, read_json, reject_nul
from core.events import Event
from core.ids import new_id, utcnow
from domain.catalog import MAX_YEAR, MIN_YEAR, check_content
from domain.identity.ratings import RATINGS, normalize_rating
from domain.moderation import MAX_NOTE
from projections import moderation as store
from projections.content import canonical_id, get_content
from projections.registry import by_name

STATUSES = ("open", "hidden", "all")


class ReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    reason: Literal["wrong_metadata", "wrong_availability", "duplicate", "inappropriate", "other"]
    note: str = Field(default="", max_length=MAX_NOTE)

    @field_validator("note")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        return reject_nul(v)  # type: ignore[no-any-return]


class EditFields(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    title: str | None = Field(default=None, min_length=1, max_length=500)
    original_title: str | None = Field(default=None, max_length=500)
    year: int | None = Field(default=None, ge=MIN_YEAR, le=MAX_YEAR)
    runtime_min: int | None = Field(default=None, ge=1, le=3000)
    genres: list[str] | None = Field(default=None, max_length=30)
    overview: str | None = Field(default=None, max_length=20000)
    rating: str | None = Field(default=None, max_length=32)

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        return reject_nul(v)

    @field_validator("rating")
    @classmethod
    def _rating(cls, v: str | None) -> str | None:
        if v is None:
            return None
        canonical = normalize_rating(v)
        if canonical is None:
            raise ValueError(f"unknown rating; one of {', '.join(RATINGS)}")
        return canonical


class DecisionIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    action: Literal["approve", "edit", "hide", "unhide"]
    note: str = Field(default="", max_length=MAX_NOTE)
    fields: EditFields | None = None

    @field_validator("note")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        return reject_nul(v)  # type: ignore[no-any-return]


async def _existing(request: Request) -> str:
    """The path's title as it reads now (following merges); 404 if there is none."""
    raw: str = request.path_params["content_id"]
    if "\x00" in raw or len(raw) > 512 or not raw.isprintable():
        raise Problem(404, "no content with that id", field="content_id")
    async with ctx(request).stores.pg.connection() as conn:
        cid = await canonical_id(conn, raw)
        cur = await conn.execute("SELECT 1 FROM content WHERE content_id = %s", (cid,))
        if await cur.fetchone() is None:
            raise Problem(404, f"no content with id {raw!r}", field="content_id")
    return cid


def _reads() -> list[Any]:
    """The queue joins decisions and reports with the catalog's titles."""
    return [by_name("moderation"), by_name("catalog")]


async def report_title(request: Request) -> Response:
    """Report something wrong with a title; it enters the moderation queue."""
    principal = await require(request, "library")
    await rate_limit(request, "report", f"acct:{principal.user_id}")
    body = await read_json(request, ReportIn)
    cid = await _existing(request)
    report_id = new_id()
    event = Event(
        "TitleReported",
        cid,
        {"report_id": report_id, "content_id": cid, "user_id": principal.user_id,
         "reason": body.reason, "note": body.note},
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )  # fmt: skip
    pos = await ctx(request).publisher.publish(event)
    return accepted(pos, report_id=report_id, content_id=cid)


async def list_queue(request: Request) -> Response:
    """The moderation queue: titles the quality rules flag or users reported, and those
    already decided."""
    await require(request, "moderation:read")
    c = ctx(request)
    status = request.query_params.get("status", "open")
    if status not in STATUSES:
        raise Problem(422, f"status must be one of {', '.join(STATUSES)}", field="status")
    limit = int_param(request, "limit", 50, 1, 200)
    raw = request.query_params.get("cursor")
    after = decode_cursor(raw, (str,))[0] if raw else ""
    await wait_for_token(request, c.stores.pg, _reads(), c.settings.consistency_wait_s)
    async with c.stores.pg.connection() as conn:
        items, last = await store.queue(conn, status=status, after=after, limit=limit)  # type: ignore[arg-type]
    return JSONResponse(
        {
            "status": status,
            "items": [i.as_dict() for i in items],
            "next_cursor": encode_cursor((last,)) if last else None,
        }
    )


async def get_title(request: Request) -> Response:
    """One title's moderation record: flags, every report and every decision."""
    await require(request, "moderation:read")
    c = ctx(request)
    await wait_for_token(request, c.stores.pg, _reads(), c.settings.consistency_wait_s)
    cid = await _existing(request)
    async with c.stores.pg.connection() as conn:
        record = await store.title(conn, cid)
    if record is None:
        raise Problem(404, f"no content with id {cid!r}", field="content_id")
    return JSONResponse(record)


async def decide(request: Request) -> Response:
    """Decide on a title: approve it as it is, edit its canonical fields, hide or unhide it."""
    principal = await require(request, "moderation:write")
    body = await read_json(request, DecisionIn)
    if (body.action == "edit") != (body.fields is not None):
        raise Problem(422, "fields: give them with action edit, and only then", field="fields")
    cid = await _existing(request)
    c = ctx(request)
    changed: dict[str, Any] = body.fields.model_dump(exclude_unset=True) if body.fields else {}
    if body.action == "edit" and not changed:
        raise Problem(422, "fields: name at least one field to change", field="fields")
    extra: dict[str, Any] = {}
    if changed:
        extra["edit_position"] = (
            await c.publisher.publish(await _editorial(request, cid, changed))
        ).token()
    decision_id = new_id()
    event = Event(
        "ModerationDecided",
        cid,
        {"decision_id": decision_id, "content_id": cid, "action": body.action,
         "admin_id": principal.user_id, "note": body.note,
         "fields": {k: json.dumps(v) for k, v in changed.items()}},
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )  # fmt: skip
    pos = await c.publisher.publish(event)
    return accepted(pos, decision_id=decision_id, content_id=cid, action=body.action, **extra)


async def _editorial(request: Request, cid: str, changed: dict[str, Any]) -> Event:
    """The edit as an editorial record: the title's current canonical fields with the
    admin's changes over them (an editorial record replaces the previous one whole)."""
    doc = await get_content(ctx(request).stores.pg, cid, now=utcnow())
    if doc is None:
        raise Problem(404, f"no content with id {cid!r}", field="content_id")
    payload = {
        "content_id": cid,
        "kind": doc["kind"],
        "title": doc["title"],
        "original_title": doc.get("original_title"),
        "year": doc.get("year"),
        "runtime_min": doc.get("runtime_min"),
        "genres": list(doc.get("genres") or ()),
        "overview": doc.get("overview"),
        "external_ids": {
            "imdb": (doc.get("external_ids") or {}).get("imdb"),
            "tmdb": (doc.get("external_ids") or {}).get("tmdb"),
        },
        "series_id": doc.get("series_id"),
        "season": doc.get("season"),
        "episode": doc.get("episode"),
        "rating": doc.get("rating"),
        **changed,
    }
    for k in ("season", "episode"):
        if payload[k] is not None and not 0 <= payload[k] <= INT32_MAX:
            payload[k] = None
    violation = check_content(payload)
    if violation:
        raise Problem(422, f"{violation.field}: {violation.message}", field=violation.field)
    return Event(
        "ContentUpserted",
        cid,
        payload,
        correlation_id=request.headers.get("X-Request-Id"),
        producer="moderation",
    )


routes = [
    Route("/v1/content/{content_id}/reports", report_title, methods=["POST"]),
    Route("/v1/admin/moderation", list_queue, methods=["GET"]),
    Route("/v1/admin/moderation/{content_id}", get_title, methods=["GET"]),
    Route("/v1/admin/moderation/{content_id}/decisions", decide, methods=["POST"]),
]
