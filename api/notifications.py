"""Notifications over REST (docs/notifications.md).

* ``GET /v1/me/notifications`` (``limit``, ``cursor``, ``unread=true``): newest first,
  with ``unread_count``, ``next_cursor`` (older) and ``latest_cursor`` (the newest one
  listed, for marking read what was seen without touching what arrived since).
* ``POST /v1/me/notifications/read`` ``{"ids": [...]}`` | ``{"all": true}`` |
  ``{"before": cursor}`` (that notification and every older one).
* ``GET|PUT /v1/me/notifications/preferences`` ``{"kinds": {kind: bool}, "digest":
  "off" | "daily"}``; a PUT changes only what it names. The digest needs a verified
  address.
* ``POST /v1/admin/notifications/broadcast`` ``{"title", "body", "url"?}``
  (``notifications:write``): one notification for every account.
* ``GET|POST /v1/notifications/unsubscribe?token=``: the digest's one-click
  unsubscribe (RFC 8058). GET shows a page whose button POSTs; the POST unsubscribes
  (mail clients POST ``List-Unsubscribe=One-Click`` themselves).

Commands append to the notifications topic and answer 202 with the consistency token;
reads wait for one when given.
"""

from __future__ import annotations

import html
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import wait_for_token
from api.context import AppContext, accepted, ctx
from api.errors import Problem
from api.identity.authorize import PAGE_HEADERS
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param, read_json, reject_nul
from core.events import Event
from core.ids import new_id
from domain import notifications as rules
from projections import notifications as store
from projections.identity.accounts import user_by_id
from projections.registry import by_name

SCOPE = "library"
ADMIN_SCOPE = "notifications:write"
MAX_IDS = 500


class _ReadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ids: list[str] | None = Field(default=None, min_length=1, max_length=MAX_IDS)
    all: bool | None = None
    before: str | None = Field(default=None, max_length=200)

    _nul = field_validator("ids", "before")(reject_nul)


class _PreferencesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: dict[str, bool] | None = None
    digest: Literal["off", "daily"] | None = None


class _BroadcastIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=1, max_length=120)
    body: str = Field(min_length=1, max_length=2000)
    url: str | None = Field(default=None, max_length=2000, pattern=r"^https?://\S+$")

    _nul = field_validator("title", "body", "url")(reject_nul)


def _event(request: Request, event_type: str, key: str, payload: dict[str, Any]) -> Event:
    return Event(
        event_type,
        key,
        payload,
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )


async def _append(request: Request, event: Event, **extra: Any) -> Response:
    pos = await ctx(request).publisher.publish(event)
    return accepted(pos, **extra)


async def _reader(request: Request) -> tuple[str, AppContext]:
    """The caller, once the notifications projection covers the request's token."""
    user = (await require(request, SCOPE)).user_id
    c = ctx(request)
    await wait_for_token(
        request, c.stores.pg, [by_name("notifications")], c.settings.consistency_wait_s
    )
    return user, c


def _position(raw: str) -> int:
    (seq,) = decode_cursor(raw, [int])
    return int(seq)


# -- the list -----------------------------------------------------------------------------


async def list_notifications(request: Request) -> Response:
    user, c = await _reader(request)
    limit = int_param(request, "limit", 20, 1, 100)
    unread = request.query_params.get("unread", "false").lower()
    if unread not in ("true", "false"):
        raise Problem(422, "unread must be true or false", field="unread")
    raw = request.query_params.get("cursor")
    before = _position(raw) if raw else None
    async with c.stores.pg.connection() as conn:
        items, more = await store.page(
            conn, user, before=before, unread=unread == "true", limit=limit
        )
        count = await store.unread_count(conn, user)
    return JSONResponse(
        {
            "items": items,
            "unread_count": count,
            "next_cursor": encode_cursor([items[-1]["position"]]) if more else None,
            "latest_cursor": encode_cursor([items[0]["position"]]) if items else None,
        }
    )


async def mark_read(request: Request) -> Response:
    user = (await require(request, SCOPE)).user_id
    body = await read_json(request, _ReadIn)
    given = [name for name in ("ids", "all", "before") if getattr(body, name) is not None]
    if len(given) != 1:
        raise Problem(
            422, 'send exactly one of {"ids": [...]}, {"all": true}, {"before": cursor}',
            field=given[1] if len(given) > 1 else "ids",
        )  # fmt: skip
    if body.all is False:
        raise Problem(422, "all must be true (leave it out otherwise)", field="all")
    payload = {
        "user_id": user,
        "ids": body.ids or [],
        "all": bool(body.all),
        "before_seq": _position(body.before) if body.before is not None else None,
    }
    return await _append(request, _event(request, "NotificationsRead", user, payload))


# -- preferences --------------------------------------------------------------------------


async def get_preferences(request: Request) -> Response:
    user, c = await _reader(request)
    async with c.stores.pg.connection() as conn:
        return JSONResponse(await store.preferences(conn, user))


async def put_preferences(request: Request) -> Response:
    user = (await require(request, SCOPE)).user_id
    body = await read_json(request, _PreferencesIn)
    kinds = body.kinds or {}
    for kind in kinds:
        if kind not in rules.KINDS:
            raise Problem(
                422, f"unknown kind {kind[:40]!r}: one of {', '.join(rules.KINDS)}",
                field=f"kinds.{kind[:40]}",
            )  # fmt: skip
    if body.digest == "daily":
        async with ctx(request).stores.pg.connection() as conn:
            account = await user_by_id(conn, user)
        if account is None or not account.email_verified:
            raise Problem(
                409, "verify your email address first: the digest goes only to a verified one",
                field="digest",
            )  # fmt: skip
    payload = {"user_id": user, "kinds": kinds, "digest": body.digest}
    return await _append(request, _event(request, "NotificationPreferencesSet", user, payload))


# -- broadcast ----------------------------------------------------------------------------


async def broadcast(request: Request) -> Response:
    admin = await require(request, ADMIN_SCOPE)
    body = await read_json(request, _BroadcastIn)
    if not body.title.strip() or not body.body.strip():
        field = "title" if not body.title.strip() else "body"
        raise Problem(422, f"{field} must not be blank", field=field)
    bid = new_id()
    payload = {
        "broadcast_id": bid,
        "title": body.title.strip(),
        "body": body.body.strip(),
        "url": body.url,
        "sent_by": admin.user_id,
    }
    event = _event(request, "NotificationBroadcast", rules.BROADCASTS_KEY, payload)
    return await _append(request, event, broadcast_id=bid)


# -- one-click unsubscribe ----------------------------------------------------------------


def _page(title: str, body: str, status: int = 200) -> Response:
    text = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width"></head><body>'
        f"<h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


async def _unsubscriber(request: Request) -> tuple[str, str]:
    token = request.query_params.get("token") or ""
    key = await store.unsubscribe_key(ctx(request).settings)
    user = rules.unsubscribe_user(key, token) if token else None
    if user is None:
        raise Problem(400, "this unsubscribe link is not valid", field="token")
    return user, token


async def unsubscribe_page(request: Request) -> Response:
    _, token = await _unsubscriber(request)
    action = html.escape(f"/v1/notifications/unsubscribe?token={token}", quote=True)
    return _page(
        "Unsubscribe from the daily digest",
        f'<form method="post" action="{action}"><p>Stop the daily notification digest mails'
        ' for this account?</p><button type="submit">Unsubscribe</button></form>',
    )


async def unsubscribe(request: Request) -> Response:
    user, _ = await _unsubscriber(request)
    pos = await ctx(request).publisher.publish(
        _event(request, "NotificationDigestUnsubscribed", user, {"user_id": user})
    )
    if "json" in request.headers.get("accept", ""):
        return accepted(pos, unsubscribed=True)
    page = _page(
        "Unsubscribed",
        "<p>You will get no more digest mails. Turn the digest on again in the app's"
        " notification settings.</p>",
    )
    page.headers["X-Consistency-Token"] = pos.token()
    return page


routes = [
    Route("/v1/me/notifications", list_notifications, methods=["GET"]),
    Route("/v1/me/notifications/read", mark_read, methods=["POST"]),
    Route("/v1/me/notifications/preferences", get_preferences, methods=["GET"]),
    Route("/v1/me/notifications/preferences", put_preferences, methods=["PUT"]),
    Route("/v1/admin/notifications/broadcast", broadcast, methods=["POST"]),
    Route("/v1/notifications/unsubscribe", unsubscribe_page, methods=["GET"]),
    Route("/v1/notifications/unsubscribe", unsubscribe, methods=["POST"]),
]
