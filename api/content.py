"""Catalog routes: upsert a title (a command) and read it (a query)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.consistency import wait_for_token
from api.context import accepted, ctx
from api.errors import Problem
from api.requests import INT32_MAX, read_json, reject_nul
from core.events import Event
from core.ids import new_id
from domain.catalog import IMDB_ID, MAX_YEAR, MIN_YEAR, TMDB_ID, check_content
from projections.catalog import get_content
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

    @field_validator("*")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        return reject_nul(v)


async def upsert_content(request: Request) -> Response:
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


async def read_content(request: Request) -> Response:
    c = ctx(request)
    await wait_for_token(request, c.stores.pg, [by_name("catalog")], c.settings.consistency_wait_s)
    content_id = request.path_params["content_id"]
    doc = await get_content(c.stores.pg, content_id)
    if doc is None:
        raise Problem(404, f"no content with id {content_id!r}", field="content_id")
    doc["updated_at"] = doc["updated_at"].isoformat()
    return JSONResponse(doc)


routes = [
    Route("/v1/content", upsert_content, methods=["POST"]),
    Route("/v1/content/{content_id}", read_content, methods=["GET"]),
]
