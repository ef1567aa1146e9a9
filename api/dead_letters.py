"""Dead letters for operators (docs/operations/dead-letters.md):

* ``GET /v1/admin/dead-letters`` (``topic``, ``projector``, ``reason``, ``error``, ``since``,
  ``state`` = pending (default) | retried | skipped | resolved | all,
  ``include_purged``, ``limit``, ``cursor``): oldest first, with ``next_cursor``;
* ``GET /v1/admin/dead-letters/{id}``: one in full (the decoded event when it decodes, the
  original headers, every decision);
* ``POST /v1/admin/dead-letters/{id}/skip`` ``{"note": ...}``: appends ``DeadLetterSkipped``.

These lived under ``/v1/admin/dlq`` until 2026-12-05, when they took the spelled-out name
every other admin resource has (``rebuilds``, ``moderation``, ``users``). The old paths
answer until the sunset (2027-06-30) with ``Deprecation``, ``Sunset`` and a
``successor-version`` link (api/deprecation.py).

Reading needs ``ops:read``, skipping ``ops:write`` (both admin only). There is no retry
route: a retry runs the projector, and the API never does (`mgw dlq retry`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import require
from api.context import accepted, ctx
from api.deprecation import moved
from api.errors import Problem
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param, read_json
from projections import dead_letters as dl
from streams.log import InvalidToken, Position

READ = "ops:read"
WRITE = "ops:write"
_REASONS = ("decode", "rejected", "apply")


def _json(obj: Any) -> Response:
    # Decoded payloads carry times and bytes that JSONResponse cannot render.
    return Response(json.dumps(obj, default=dl.plain), media_type="application/json")


def _filter(request: Request) -> dl.LetterFilter:
    q = request.query_params
    state = q.get("state") or "pending"
    if state not in dl.STATES:
        raise Problem(422, f"state must be one of {', '.join(dl.STATES)}", field="state")
    reason = q.get("reason") or None
    if reason is not None and reason not in _REASONS:
        raise Problem(422, f"reason must be one of {', '.join(_REASONS)}", field="reason")
    since = None
    if q.get("since"):
        try:
            since = datetime.fromisoformat(q["since"].replace("Z", "+00:00"))
        except ValueError:
            raise Problem(422, "since must be an ISO 8601 time", field="since") from None
        since = since if since.tzinfo else since.replace(tzinfo=UTC)
    return dl.LetterFilter(
        topic=_text(q.get("topic"), "topic"),
        projector=_text(q.get("projector"), "projector"),
        reason=reason,
        error=_text(q.get("error"), "error"),
        since=since,
        state=state,
        include_purged=q.get("include_purged") in ("1", "true"),
    )


def _text(value: str | None, name: str) -> str | None:
    """A text filter PostgreSQL can compare: a NUL byte cannot be in a text value, so it
    would fail the query (a 500) instead of matching nothing."""
    if not value:
        return None
    if "\x00" in value or len(value) > 1000:
        raise Problem(422, f"{name} must be printable text of up to 1,000 characters", field=name)
    return value


async def list_letters(request: Request) -> Response:
    await require(request, READ)
    f = _filter(request)
    limit = int_param(request, "limit", 50, 1, 200)
    raw = request.query_params.get("cursor")
    after = decode_cursor(raw, dl.CURSOR_KINDS) if raw else None
    async with ctx(request).stores.pg.connection() as conn:
        rows = await dl.list_letters(conn, f, limit + 1, after)
    more = len(rows) > limit
    rows = rows[:limit]
    return _json(
        {
            "items": [dl.summary(r) for r in rows],
            "next_cursor": encode_cursor(rows[-1]["cursor_key"]) if more else None,
        }
    )


async def _letter(request: Request) -> dict[str, Any]:
    raw = request.path_params["letter_id"]
    try:
        projector, where = dl.parse_letter_id(raw)
    except InvalidToken as exc:
        raise Problem(404, f"no such dead letter: {exc}", field="id") from None
    async with ctx(request).stores.pg.connection() as conn:
        letter = await dl.get_letter(conn, projector, where)
    if letter is None:
        raise Problem(404, "no such dead letter", field="id")
    return letter


async def get_letter(request: Request) -> Response:
    await require(request, READ)
    return _json(dl.detail(await _letter(request)))


class SkipBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=2000)


async def skip_letter(request: Request) -> Response:
    principal = await require(request, WRITE)
    body = await read_json(request, SkipBody, optional=True)
    letter = await _letter(request)
    if letter["state"] != "pending":
        raise Problem(409, f"this dead letter is already {letter['state']}", field="id")
    where = Position(letter["topic"], letter["partition"], letter["offset"])
    event = dl.decision(
        "DeadLetterSkipped", letter["projector"], where, by=principal.user_id, note=body.note
    )
    pos = await ctx(request).publisher.publish(event)
    return accepted(pos, id=letter["id"], decision="skipped")


_CURRENT = [
    Route("/v1/admin/dead-letters", list_letters, methods=["GET"]),
    Route("/v1/admin/dead-letters/{letter_id:path}/skip", skip_letter, methods=["POST"]),
    Route("/v1/admin/dead-letters/{letter_id:path}", get_letter, methods=["GET"]),
]
MOVED_ON = datetime(2026, 12, 5, tzinfo=UTC)
SUNSET = datetime(2027, 6, 30, tzinfo=UTC)
routes = _CURRENT + [
    moved(r, r.path.replace("/dead-letters", "/dlq"), since=MOVED_ON, sunset=SUNSET)
    for r in _CURRENT
]
