"""The tools an assistant gets over MCP, each a call to one REST route of this API.

Pure: a tool is its name, what it tells the model, the JSON schema of its arguments (a
pydantic model, so the schema and the validation are one declaration), the scope it
needs and how its arguments become an HTTP request. api/mcp_gateway.py sends the
request; api/mcp.py serves the tools over stdio and streamable HTTP.

Going through the REST API rather than the projections keeps one set of rules: the
profile's parental limit, rate limits, scopes and read-your-writes apply to an assistant
exactly as to an app.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field

from api.recommendations import ROWS
from domain.catalog import MAX_YEAR, MIN_YEAR, OFFER_TYPES, PLATFORMS
from domain.identity.ratings import RATINGS

Platform = Literal[PLATFORMS]  # type: ignore[valid-type]
Offer = Literal[OFFER_TYPES]  # type: ignore[valid-type]
Rating = Literal[RATINGS]  # type: ignore[valid-type]
Row = Literal[ROWS]  # type: ignore[valid-type]

REGION = Field(
    default=None,
    pattern=r"^[A-Za-z]{2}$",
    description="ISO 3166-1 alpha-2 country, e.g. US or GB (default: your services' region,"
    " else US)",
)
CONTENT_ID = Field(
    min_length=1,
    max_length=512,
    description="A title's content_id, as search_titles and the other tools return it",
)
CURSOR = Field(
    default=None, max_length=2048, description="next_cursor from the previous page, for more"
)


class Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SearchArgs(Args):
    query: str = Field(
        default="",
        max_length=2000,
        description="A title, a person or a description in plain words ('funny 90s sci-fi on"
        " netflix', 'the one where a robot is alone on earth'); empty browses popular titles",
    )
    kind: Literal["movie", "series", "episode"] | None = None
    genres: list[str] = Field(default_factory=list, max_length=10)
    year_from: int | None = Field(default=None, ge=MIN_YEAR, le=MAX_YEAR)
    year_to: int | None = Field(default=None, ge=MIN_YEAR, le=MAX_YEAR)
    platforms: list[Platform] = Field(default_factory=list, max_length=8)
    offer_types: list[Offer] = Field(default_factory=list, max_length=5)
    region: str | None = REGION
    max_rating: Rating | None = Field(default=None, description="e.g. PG-13 or TV-14")
    on_my_services: bool = Field(
        default=False,
        description="Only titles streaming on the services the signed-in user pays for",
    )
    limit: int = Field(default=10, ge=1, le=50)
    cursor: str | None = CURSOR


class TitleArgs(Args):
    content_id: str = CONTENT_ID
    region: str | None = REGION


class WhereArgs(Args):
    content_id: str = CONTENT_ID
    region: str | None = REGION
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = CURSOR


class WindowArgs(Args):
    region: str | None = REGION
    platform: Platform | None = None
    days: int | None = Field(default=None, ge=1, le=365, description="How far to look")
    on_my_services: bool = Field(
        default=False, description="Only the signed-in user's services, in their region"
    )
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = CURSOR


class RecommendationArgs(Args):
    row: Row = Field(default="top_picks", description="Which shelf of recommendations")
    limit: int = Field(default=10, ge=1, le=100)


class PageArgs(Args):
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = CURSOR


class WatchlistListArgs(PageArgs):
    available: Literal["any", "mine"] = Field(
        default="any", description="mine: only titles streaming on the user's services"
    )


class ContentArgs(Args):
    content_id: str = CONTENT_ID


@dataclass(frozen=True, slots=True)
class Call:
    """One HTTP request to the API."""

    method: str
    path: str
    params: list[tuple[str, str]] = field(default_factory=list)
    json: Any = None
    #: a retried write must not apply twice: the library honours Idempotency-Key
    idempotent_write: bool = False
    #: the title must exist first (the library takes any id; an assistant can guess one)
    check_title: str | None = None
    #: a read that waits for this write (its consistency token) before the tool answers
    settle: str | None = None


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    title: str
    description: str
    args: type[Args]
    call: Callable[[Any], Call]
    #: None: anyone may call it; else the OAuth scope the caller's token needs
    scope: str | None = None
    read_only: bool = True

    def input_schema(self) -> dict[str, Any]:
        return self.args.model_json_schema()


def path_id(content_id: str) -> str:
    return quote(content_id, safe="")


def _opt(params: list[tuple[str, str]], name: str, value: Any) -> None:
    if value is None or value == "" or value == []:
        return
    if isinstance(value, bool):
        params.append((name, "true" if value else "false"))
    elif isinstance(value, list):
        params.append((name, ",".join(str(v) for v in value)))
    else:
        params.append((name, str(value)))


def _search(a: SearchArgs) -> Call:
    p: list[tuple[str, str]] = [("q", a.query), ("limit", str(a.limit))]
    for name, value in (
        ("kind", a.kind), ("genre", a.genres), ("year_from", a.year_from),
        ("year_to", a.year_to), ("platform", a.platforms), ("offer", a.offer_types),
        ("region", a.region), ("max_rating", a.max_rating), ("cursor", a.cursor),
    ):  # fmt: skip
        _opt(p, name, value)
    if a.on_my_services:
        p.append(("services", "mine"))
    return Call("GET", "/v1/search", p)


def _title(a: TitleArgs) -> Call:
    p: list[tuple[str, str]] = []
    _opt(p, "region", a.region)
    return Call("GET", f"/v1/content/{path_id(a.content_id)}", p)


def _where(a: WhereArgs) -> Call:
    p = [("limit", str(a.limit))]
    _opt(p, "region", a.region)
    _opt(p, "cursor", a.cursor)
    return Call("GET", f"/v1/content/{path_id(a.content_id)}/availability", p)


def _window(path: str) -> Callable[[WindowArgs], Call]:
    def build(a: WindowArgs) -> Call:
        p = [("limit", str(a.limit))]
        for name, value in (
            ("region", a.region), ("platform", a.platform), ("days", a.days),
            ("cursor", a.cursor),
        ):  # fmt: skip
            _opt(p, name, value)
        if a.on_my_services:
            p.append(("services", "mine"))
        return Call("GET", path, p)

    return build


def _page(path: str) -> Callable[[PageArgs], Call]:
    def build(a: PageArgs) -> Call:
        p = [("limit", str(a.limit))]
        _opt(p, "cursor", a.cursor)
        if isinstance(a, WatchlistListArgs):
            p.append(("available", a.available))
        return Call("GET", path, p)

    return build


TOOLS: tuple[Tool, ...] = (
    Tool(
        "search_titles",
        "Search titles",
        "Find films and series across the eight streaming platforms by title, person or a"
        " description of the story, with optional filters. Each item's id is the"
        " content_id the other tools take. on_my_services needs a signed-in user who has"
        " chosen their services.",
        SearchArgs,
        _search,
    ),
    Tool(
        "title_details",
        "Title details",
        "Everything known about one title: synopsis, year, genres, people, rating and a"
        " summary of where it streams in the region.",
        TitleArgs,
        _title,
    ),
    Tool(
        "where_to_watch",
        "Where to watch",
        "Every offer for one title in a region: platform, subscription/free/ads/rent/buy,"
        " price, quality, until when, and deep links that open the title in the platform's"
        " web site or app.",
        WhereArgs,
        _where,
    ),
    Tool(
        "leaving_soon",
        "Leaving soon",
        "Titles whose offers end within the next days (14 by default), soonest first.",
        WindowArgs,
        _window("/v1/catalog/leaving"),
    ),
    Tool(
        "new_arrivals",
        "New arrivals",
        "Titles that arrived on a platform within the last days (7 by default), newest first.",
        WindowArgs,
        _window("/v1/catalog/new"),
    ),
    Tool(
        "recommendations",
        "Recommendations",
        "Titles picked for the signed-in user from what they watched and rated.",
        RecommendationArgs,
        lambda a: Call("GET", "/v1/me/recommendations", [("row", a.row), ("limit", str(a.limit))]),
        scope="library",
    ),
    Tool(
        "continue_watching",
        "Continue watching",
        "What the signed-in user started and has not finished, with the position to resume.",
        PageArgs,
        _page("/v1/me/continue-watching"),
        scope="playback",
    ),
    Tool(
        "watchlist_list",
        "Watchlist",
        "The signed-in user's watchlist, newest first, with where each title streams.",
        WatchlistListArgs,
        _page("/v1/me/watchlist"),
        scope="library",
    ),
    Tool(
        "watchlist_add",
        "Add to watchlist",
        "Put a title on the signed-in user's watchlist (on every device). Adding a title"
        " already there changes nothing.",
        ContentArgs,
        lambda a: Call(
            "POST",
            "/v1/me/watchlist",
            json={"content_id": a.content_id},
            idempotent_write=True,
            check_title=a.content_id,
            settle="/v1/me/watchlist",
        ),
        scope="library",
        read_only=False,
    ),
    Tool(
        "watchlist_remove",
        "Remove from watchlist",
        "Take a title off the signed-in user's watchlist (on every device).",
        ContentArgs,
        lambda a: Call(
            "DELETE",
            f"/v1/me/watchlist/{path_id(a.content_id)}",
            idempotent_write=True,
            settle="/v1/me/watchlist",
        ),
        scope="library",
        read_only=False,
    ),
)

BY_NAME = {t.name: t for t in TOOLS}


def visible(scopes: frozenset[str] | None) -> list[Tool]:
    """The tools a caller may use: the public ones signed out (``None``), and those whose
    scope the caller's token carries signed in."""
    return [t for t in TOOLS if t.scope is None or (scopes is not None and t.scope in scopes)]
