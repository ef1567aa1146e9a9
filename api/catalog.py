"""Catalog lists: new arrivals and titles leaving soon, per region (and platform).

Titles above the active profile's parental limit (api/identity/profiles.py) are left out of a
page after it is read, so a limited profile's page may hold fewer than ``limit`` items
while ``next_cursor`` still leads on.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import optional
from api.consistency import wait_for_token
from api.context import ctx
from api.errors import Problem
from api.identity.profiles import rating_limit
from api.library import my_services
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param
from api.responses import Body, Page, respond
from core.ids import utcnow
from domain.catalog import PLATFORMS
from projections.availability import WindowItem, arrivals_or_departures
from projections.content import ratings_of
from projections.registry import by_name

_REGION = re.compile(r"^[A-Za-z]{2}$")


class DeepLinks(Body):
    web: str | None
    app: str | None


class WindowTitle(Body):
    """A title arriving (``available_from``) or leaving (``available_until``)."""

    content_id: str
    title: str
    year: int | None
    kind: str
    platform: str
    available_from: datetime | None = None
    available_until: datetime | None = None
    offer_types: list[str]
    deep_links: DeepLinks


class CatalogWindow(Page):
    region: str
    platform: str | None
    services: Literal["any", "mine"]
    days: int
    items: list[WindowTitle]


def region_param(request: Request, default: str | None = "US") -> str | None:
    raw = request.query_params.get("region")
    if raw is None or raw == "":
        return default
    if not _REGION.match(raw):
        raise Problem(422, "region must be an ISO 3166-1 alpha-2 code such as US", field="region")
    return raw.upper()


def platform_param(request: Request) -> str | None:
    raw = request.query_params.get("platform") or None
    if raw is not None and raw not in PLATFORMS:
        raise Problem(422, f"platform must be one of {', '.join(PLATFORMS)}", field="platform")
    return raw


def _item(i: WindowItem, field: str) -> dict[str, object]:
    return {
        "content_id": i.content_id,
        "title": i.title,
        "year": i.year,
        "kind": i.kind,
        "platform": i.platform,
        field: i.at.isoformat(),
        "offer_types": i.offer_types,
        "deep_links": {"web": i.web_url, "app": i.app_url},
    }


async def _window(request: Request, *, leaving: bool) -> Response:
    c = ctx(request)
    cap = await rating_limit(request, await optional(request))
    services = request.query_params.get("services", "any")
    if services not in ("any", "mine"):
        raise Problem(422, "services must be mine or any", field="services")
    mine = await my_services(request) if services == "mine" else None
    region = region_param(request, mine["region"] if mine else "US")
    assert region is not None
    platform = platform_param(request)
    days = int_param(request, "days", 14 if leaving else 7, 1, 365)
    limit = int_param(request, "limit", 20, 1, 100)
    raw = request.query_params.get("cursor")
    cursor = decode_cursor(raw, (datetime, str, str)) if raw else None
    await wait_for_token(
        request,
        c.stores.pg,
        [by_name("availability"), by_name("catalog"), by_name("moderation")],
        c.settings.consistency_wait_s,
    )
    items = await arrivals_or_departures(
        c.stores.pg,
        leaving=leaving,
        region=region,
        days=days,
        now=utcnow(),
        platform=platform,
        limit=limit + 1,
        cursor=cursor,  # type: ignore[arg-type]
        platforms=mine["platforms"] if mine else None,
        offer_types=mine["offer_types"] if mine else None,
    )
    page, more = items[:limit], len(items) > limit
    last = page[-1] if page else None
    shown = page
    if cap.max_rating is not None and page:
        async with c.stores.pg.connection() as conn:
            rated = await ratings_of(conn, sorted({i.content_id for i in page}))
        shown = [i for i in page if cap.allows(rated.get(i.content_id))]
    field = "available_until" if leaving else "available_from"
    return respond(
        CatalogWindow,
        {
            "region": region,
            "platform": platform,
            "services": services,
            "days": days,
            "items": [_item(i, field) for i in shown],
            "next_cursor": encode_cursor((last.at, last.content_id, last.platform))
            if more and last
            else None,
        },
    )


async def new_arrivals(request: Request) -> Response:
    return await _window(request, leaving=False)


async def leaving_soon(request: Request) -> Response:
    return await _window(request, leaving=True)


routes = [
    Route("/v1/catalog/new", new_arrivals, methods=["GET"]),
    Route("/v1/catalog/leaving", leaving_soon, methods=["GET"]),
]
