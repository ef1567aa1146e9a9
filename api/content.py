"""Catalog routes: upsert a title (a command) and read it (a query).

A title may carry a parental ``rating`` (MPAA or TV, any spelling ``normalize_rating``
reads; stored canonical). Reading a title, or its availability, honours the active
profile's limit (api/identity/profiles.py): a title above it is 403, naming ``X-Profile-Id``.

A title moderation hid (docs/moderation.md) is not found (404, as an unknown id) by
anyone but a caller with the ``moderation:read`` scope, who reads it with
``"moderation": {"status": "hidden"}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import Principal, optional, require
from api.catalog import DeepLinks, region_param
from api.consistency import wait_for_token
from api.context import accepted, ctx
from api.errors import Problem
from api.identity.profiles import blocked, rating_limit
from api.pagination import decode_cursor, encode_cursor
from api.requests import INT32_MAX, int_param, read_json, reject_nul
from api.responses import Body, Page, respond
from core.events import Event
from core.ids import new_id, utcnow
from domain.catalog import IMDB_ID, MAX_YEAR, MIN_YEAR, TMDB_ID, check_content
from domain.identity.ratings import RATINGS, normalize_rating
from projections import moderation
from projections.availability import offers_for
from projections.base import Projector
from projections.content import canonical_id, get_content, ratings_of
from projections.registry import by_name


class ExternalIds(BaseModel):
    model_config = ConfigDict(extra="forbid")
    imdb: str | None = Field(default=None, pattern=IMDB_ID.pattern)
    tmdb: str | None = Field(default=None, pattern=TMDB_ID.pattern)

    @field_validator("tmdb", mode="before")
    @classmethod
    def _tmdb_as_text(cls, v: Any) -> Any:
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v


class ContentIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    content_id: str | None = Field(
        default=None, min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"
    )
    kind: Literal["movie", "series", "episode"] = "movie"
    title: str = Field(min_length=1, max_length=500)
    original_title: str | None = Field(default=None, max_length=500)
    year: int | None = Field(default=None, ge=MIN_YEAR, le=MAX_YEAR)
    runtime_min: int | None = Field(default=None, ge=1, le=3000)
    genres: list[str] = Field(default_factory=list, max_length=30)
    overview: str | None = Field(default=None, max_length=20000)
    external_ids: ExternalIds = Field(default_factory=ExternalIds)
    series_id: str | None = Field(default=None, max_length=128)
    season: int | None = Field(default=None, ge=0, le=INT32_MAX)
    episode: int | None = Field(default=None, ge=0, le=INT32_MAX)
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
            raise ValueError(f"unknown rating; one of {', '.join(RATINGS)}, or null: unrated")
        return canonical


class Offer(Body):
    platform: str
    platform_id: str
    region: str
    offer_type: str
    quality: str
    price: str | None = Field(description="a decimal, as text")
    currency: str | None
    available_from: datetime | None
    available_until: datetime | None
    available_now: bool
    deep_links: DeepLinks


class Quality(Body):
    score: float
    base: float
    freshness: float
    completeness: float
    agreement: float
    coverage: float
    popularity: float


class TitleIds(Body):
    imdb: str | None
    tmdb: str | None


class Title(Body):
    """A canonical title (merged titles read as the survivor) with its offers."""

    id: str
    kind: str
    title: str
    original_title: str | None
    year: int | None
    runtime_min: int | None
    genres: list[str]
    overview: str | None
    rating: str | None
    external_ids: TitleIds
    platforms: list[str]
    platform_ids: dict[str, list[str]]
    merged_ids: list[str]
    quality: Quality
    availability: list[Offer]
    first_seen: datetime
    updated_at: datetime
    series_id: str | None = Field(default=None, description="episodes only")
    season: int | None = Field(default=None, description="episodes only")
    episode: int | None = Field(default=None, description="episodes only")
    moderation: ModerationState | None = Field(
        default=None,
        description="only for a title moderation hid, only to callers with moderation:read"
        " (everyone else gets 404)",
    )


class ModerationState(Body):
    status: Literal["hidden"] = Field(description="hidden by moderation")


class Availability(Page):
    content_id: str
    region: str | None
    items: list[Offer]


async def upsert_content(request: Request) -> Response:
    await require(request, "catalog:write")
    body = await read_json(request, ContentIn)
    payload = body.model_dump()
    payload["content_id"] = body.content_id or new_id()
    violation = check_content(payload)
    if violation:
        raise Problem(422, f"{violation.field}: {violation.message}", field=violation.field)
    event = Event(
        "ContentUpserted",
        payload["content_id"],
        payload,
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )
    pos = await ctx(request).publisher.publish(event)
    return accepted(pos, content_id=payload["content_id"])


def _reads() -> list[Projector]:
    """The catalog, its offers, and moderation (whether a title is hidden)."""
    return [by_name("catalog"), by_name("availability"), by_name("moderation")]


def _moderator(principal: Principal | None) -> bool:
    return principal is not None and principal.has("moderation:read")


def _content_id(request: Request) -> str:
    """The path's content id; one that cannot be stored (NUL, a lone surrogate) cannot
    exist, so it is not found."""
    cid: str = request.path_params["content_id"]
    if "\x00" in cid or len(cid) > 512 or not cid.isprintable():
        raise Problem(404, "no content with that id", field="content_id")
    try:
        cid.encode("utf-8")
    except UnicodeError:
        raise Problem(404, "no content with that id", field="content_id") from None
    return cid


async def read_content(request: Request) -> Response:
    c = ctx(request)
    principal = await optional(request)
    limit = await rating_limit(request, principal)
    region = region_param(request, default=None)
    await wait_for_token(request, c.stores.pg, _reads(), c.settings.consistency_wait_s)
    content_id = _content_id(request)
    doc = await get_content(
        c.stores.pg,
        content_id,
        now=utcnow(),
        region=region,
        half_life_days=c.settings.freshness_half_life_days,
    )
    if doc is None:
        raise Problem(404, f"no content with id {content_id!r}", field="content_id")
    async with c.stores.pg.connection() as conn:
        hidden = await moderation.hidden(conn, doc["id"])
    if hidden:
        if not _moderator(principal):
            raise Problem(404, f"no content with id {content_id!r}", field="content_id")
        doc["moderation"] = {"status": "hidden"}
    if not limit.allows(doc["rating"]):
        raise blocked(doc["rating"], limit)
    headers = {}
    if doc["id"] != content_id:  # merged: this id now reads as the survivor
        headers["Content-Location"] = f"/v1/content/{doc['id']}"
    return respond(Title, doc, headers=headers)


async def read_availability(request: Request) -> Response:
    """One entity's offers, keyset-paged on (region, platform, platform id, offer type)."""
    c = ctx(request)
    principal = await optional(request)
    rating_cap = await rating_limit(request, principal)
    region = region_param(request, default=None)
    limit = int_param(request, "limit", 50, 1, 500)
    raw = request.query_params.get("cursor")
    after = decode_cursor(raw, (str, str, str, str)) if raw else None
    await wait_for_token(request, c.stores.pg, _reads(), c.settings.consistency_wait_s)
    content_id = _content_id(request)
    now = utcnow()
    async with c.stores.pg.connection() as conn:
        cid = await canonical_id(conn, content_id)
        exists = await (
            await conn.execute("SELECT 1 FROM content WHERE content_id = %s", (cid,))
        ).fetchone()
        if exists is None or (await moderation.hidden(conn, cid) and not _moderator(principal)):
            raise Problem(404, f"no content with id {content_id!r}", field="content_id")
        if rating_cap.max_rating is not None:
            rating = (await ratings_of(conn, [cid])).get(cid)
            if not rating_cap.allows(rating):
                raise blocked(rating, rating_cap)
        offers = await offers_for(conn, cid, region, after=after, limit=limit + 1)  # type: ignore[arg-type]
    page, more = offers[:limit], len(offers) > limit
    last = page[-1] if page else None
    return respond(
        Availability,
        {
            "content_id": cid,
            "region": region,
            "items": [o.as_dict(now) for o in page],
            "next_cursor": encode_cursor(
                (last.region, last.platform, last.platform_id, last.offer_type)
            )
            if more and last
            else None,
        },
    )


routes = [
    Route("/v1/content", upsert_content, methods=["POST"]),
    Route("/v1/content/{content_id}", read_content, methods=["GET"]),
    Route("/v1/content/{content_id}/availability", read_availability, methods=["GET"]),
]
