"""A user's library over REST: services, settings, watchlist, history and ratings.

Each write is one op through the same path as a device's sync batch (api/sync.py), so
it lands in the change feed every other device pulls; ``Idempotency-Key`` makes it the
op's id, so a retried request answers ``duplicate`` and changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import optional, require
from api.consistency import HEADER, wait_for_token, wait_until_covered
from api.context import ctx
from api.errors import Problem
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param, read_body
from api.responses import Body, Page, respond
from api.sync import device_of, submit
from core.ids import iso_z, new_id, utcnow
from core.topics import LIBRARY, PLAYBACK
from domain import library as lib
from projections import library as store
from projections.registry import by_name
from projections.up_next import up_next
from streams.log import Position, partition_for

#: an offer ending within this window makes a watchlist item "leaving"
LEAVING_WINDOW = timedelta(days=30)


class OpOutcome(Body):
    """A library write: applied (200) or appended and not yet applied (202); a retried
    ``Idempotency-Key`` answers ``duplicate``."""

    op_id: str
    status: Literal["applied", "duplicate"]


class Services(Body):
    region: str | None = Field(description="null until services are set")
    platforms: list[str]
    offer_types: list[str] = Field(description="empty: every offer type")


class Settings(Body):
    """Resume rules: a play under ``min_play_s`` leaves no trace, one past
    ``watched_pct`` is watched, one under ``min_resume_pct`` starts over."""

    min_resume_pct: float
    watched_pct: float
    min_play_s: float


class StreamingOffer(Body):
    platform: str
    offer_type: str
    available_until: datetime | None


class WatchlistItem(Body):
    content_id: str
    title: str | None = Field(description="null for a title the catalog does not know")
    year: int | None
    kind: str | None
    added_at: datetime
    streaming: list[StreamingOffer]
    leaving_at: datetime | None = Field(description="when the last offer ends, within 30 days")


class Watchlist(Page):
    items: list[WatchlistItem]
    region: str


class HistoryItem(Body):
    content_id: str
    title: str | None
    year: int | None
    plays: int
    first_watched_at: datetime
    last_watched_at: datetime


class History(Page):
    items: list[HistoryItem]


class RatingItem(Body):
    content_id: str
    title: str | None
    year: int | None
    rating: int = Field(ge=1, le=10)
    rated_at: datetime


class Ratings(Page):
    items: list[RatingItem]


class UpNextItem(Body):
    """A title in progress (``continue``) or the next episode of a series
    (``next_episode``, with ``series_title``)."""

    content_id: str
    reason: Literal["continue", "next_episode"]
    title: str | None
    kind: str | None
    series_id: str | None
    series_title: str | None = None
    season: int | None
    episode: int | None
    position_s: float
    duration_s: float | None
    progress: float | None
    at: datetime


class UpNext(Page):
    items: list[UpNextItem]


async def _command(
    request: Request, kind: str, content_id: str | None = None, value: Any = None
) -> Response:
    user = (await require(request, "library")).user_id
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 128:
        raise Problem(422, "must be 1 to 128 characters", field="Idempotency-Key")
    op: dict[str, Any] = {
        "op_id": key or new_id(),
        "kind": kind,
        "at": utcnow().isoformat(),
    }
    if content_id is not None:
        op["content_id"] = content_id
    if value is not None:
        op["value"] = value
    outcomes, last, done = await submit(
        request, user, device_of(request), [op], seen=None, server_clock=True
    )
    o = outcomes[0]
    if o.status == "rejected":
        raise Problem(o.code, f"{o.field}: {o.error}", field=o.field)
    headers = {"X-Consistency-Token": last.token()} if last else {}
    if key and o.status == "duplicate":
        headers["Idempotent-Replayed"] = "true"
    return respond(OpOutcome, {"op_id": o.op_id, "status": o.status}, 200 if done else 202, headers)


async def _read(request: Request) -> tuple[str, Any]:
    """The caller and the app, once the library covers the request's consistency token.
    A playback token is followed through: the play's watch (if it was one) is appended by
    the playback projector to the user's library partition, which is then waited for."""
    user = (await require(request, "library")).user_id
    c = ctx(request)
    wait = c.settings.consistency_wait_s
    reads = [by_name("library"), by_name("playback")]
    await wait_for_token(request, c.stores.pg, reads, wait)
    token = request.headers.get(HEADER) or request.query_params.get("consistency_token")
    if token and token.startswith(f"{PLAYBACK.name}:"):
        part = partition_for(user.encode(), LIBRARY.partitions)
        end = (await c.log.end_offsets(LIBRARY.name)).get(part, 0)
        if end and not await wait_until_covered(
            c.stores.pg, ["library"], Position(LIBRARY.name, part, end - 1), wait
        ):
            raise Problem(
                503, "the library has not caught up with this play yet; retry",
                field=HEADER, headers={"Retry-After": "1"},
            )  # fmt: skip
    return user, c


async def my_services(request: Request) -> dict[str, Any]:
    """The signed-in caller's services for ``services=mine`` on a list: 401 signed out,
    409 when none are set."""
    me = await optional(request)
    if me is None or not me.has("library"):
        raise Problem(
            401, "services=mine lists what streams on your services: sign in", field="services",
            headers={"WWW-Authenticate": 'Bearer realm="mgw", scope="library"'},
        )  # fmt: skip
    async with ctx(request).stores.pg.connection() as conn:
        services: dict[str, Any] | None = await store.register(conn, me.user_id, "services")
    if not services or not services.get("platforms"):
        raise Problem(409, "set your services first: PUT /v1/me/services", field="services")
    return services


def _content_id(request: Request) -> str:
    cid: str = request.path_params["content_id"]
    if not 0 < len(cid) <= 128 or "\x00" in cid:
        raise Problem(422, "must be 1 to 128 characters", field="content_id")
    return cid


# -- services and settings ------------------------------------------------------------


async def put_services(request: Request) -> Response:
    return await _command(request, "services.set", value=await read_body(request))


async def get_services(request: Request) -> Response:
    user, c = await _read(request)
    async with c.stores.pg.connection() as conn:
        value = await store.register(conn, user, "services")
    if value is None:
        return respond(Services, {"region": None, "platforms": [], "offer_types": []})
    return respond(Services, value)


async def put_settings(request: Request) -> Response:
    return await _command(request, "settings.set", value=await read_body(request))


async def get_settings(request: Request) -> Response:
    user, c = await _read(request)
    async with c.stores.pg.connection() as conn:
        value = await store.register(conn, user, "settings")
    return respond(Settings, value or lib.DEFAULT_RULES.as_dict())


# -- watchlist --------------------------------------------------------------------------


async def post_watchlist(request: Request) -> Response:
    body = await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("content_id"), str):
        raise Problem(422, 'is required: {"content_id": "..."}', field="content_id")
    return await _command(request, "watchlist.add", body["content_id"])


async def delete_watchlist(request: Request) -> Response:
    return await _command(request, "watchlist.remove", _content_id(request))


_WATCH_SQL = """
SELECT c.content_id, c.title, c.year, c.kind,
       coalesce(array_agg(DISTINCT a.platform || '|' || a.offer_type || '|' ||
                coalesce(to_char(a.available_until AT TIME ZONE 'UTC',
                                 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), ''))
                FILTER (WHERE a.platform IS NOT NULL), '{}')
  FROM content c
  LEFT JOIN platform_titles t ON t.content_id = c.content_id
  LEFT JOIN availability a
    ON a.platform = t.platform AND a.platform_id = t.platform_id AND a.region = %(region)s
   AND (a.available_until IS NULL OR a.available_until > now())
   AND (a.available_from IS NULL OR a.available_from <= now())
 WHERE c.content_id = ANY(%(ids)s)
 GROUP BY c.content_id, c.title, c.year, c.kind
"""


async def get_watchlist(request: Request) -> Response:
    user, c = await _read(request)
    q = request.query_params
    available = q.get("available", "any")
    if available not in ("any", "mine"):
        raise Problem(422, "available must be mine or any", field="available")
    sort = q.get("sort", "added")
    if sort not in ("added", "title", "leaving"):
        raise Problem(422, "sort must be added, title or leaving", field="sort")
    limit = int_param(request, "limit", 50, 1, 200)
    async with c.stores.pg.connection() as conn:
        services = await store.register(conn, user, "services")
        region = (q.get("region") or (services or {}).get("region") or "US").upper()
        if available == "mine" and not services:
            raise Problem(
                409,
                "no services set: PUT /v1/me/services with your region and platforms first",
                field="available",
            )
        items = await store.entries(conn, user, "watchlist")
        cur = await conn.execute(_WATCH_SQL, {"region": region, "ids": [i[0] for i in items]})
        titles = {r[0]: r for r in await cur.fetchall()}
    mine = set((services or {}).get("platforms") or ())
    offer_ok = set((services or {}).get("offer_types") or ())
    now = utcnow()
    out = []
    for cid, value, _ in items:
        row = titles.get(cid)
        offers = []
        for entry in row[4] if row else ():
            platform, offer_type, until = entry.split("|", 2)
            if services and (platform not in mine or (offer_ok and offer_type not in offer_ok)):
                continue
            offers.append(
                {"platform": platform, "offer_type": offer_type, "available_until": until or None}
            )
        if available == "mine" and not offers:
            continue
        ends = [
            datetime.fromisoformat(o["available_until"].replace("Z", "+00:00"))
            for o in offers
            if o["available_until"]
        ]
        # leaving: every offer on my services ends, the last of them within the window
        leaving = max(ends) if ends and len(ends) == len(offers) else None
        out.append(
            {
                "content_id": cid,
                "title": row[1] if row else None,
                "year": row[2] if row else None,
                "kind": row[3] if row else None,
                "added_at": value["added_at"],
                "streaming": sorted(offers, key=lambda o: (o["platform"], o["offer_type"])),
                "leaving_at": iso_z(leaving)
                if leaving and leaving - now <= LEAVING_WINDOW
                else None,
            }
        )

    def key(i: dict[str, Any]) -> list[Any]:
        if sort == "added":  # newest first
            return [-datetime.fromisoformat(i["added_at"].replace("Z", "+00:00")).timestamp(),
                    i["content_id"]]  # fmt: skip
        if sort == "title":
            return [(i["title"] or "").casefold(), i["content_id"]]
        return [i["leaving_at"] or "~", i["content_id"]]  # soonest first, never last

    out.sort(key=key)
    raw = q.get("cursor")
    if raw:
        kinds = [float, str] if sort == "added" else [str, str]
        after = list(decode_cursor(raw, kinds))
        out = [i for i in out if key(i) > after]
    page = out[:limit]
    nxt = encode_cursor(key(page[-1])) if len(out) > limit else None
    return respond(Watchlist, {"items": page, "region": region, "next_cursor": nxt})


# -- history ------------------------------------------------------------------------------


async def post_history(request: Request) -> Response:
    body = await read_body(request)
    if not isinstance(body, dict) or not isinstance(body.get("content_id"), str):
        raise Problem(422, 'is required: {"content_id": "..."}', field="content_id")
    value = {"watched_at": body["watched_at"]} if "watched_at" in body else None
    return await _command(request, "history.add", body["content_id"], value)


async def delete_history(request: Request) -> Response:
    return await _command(request, "history.remove", _content_id(request))


async def _titled(request: Request, entity: str, value_key: str) -> dict[str, Any]:
    user, c = await _read(request)
    limit = int_param(request, "limit", 50, 1, 200)
    async with c.stores.pg.connection() as conn:
        items = await store.entries(conn, user, entity)
        cur = await conn.execute(
            "SELECT content_id, title, year FROM content WHERE content_id = ANY(%s)",
            ([i[0] for i in items],),
        )
        titles = {r[0]: r for r in await cur.fetchall()}
    rows = [
        {
            "content_id": cid,
            "title": titles[cid][1] if cid in titles else None,
            "year": titles[cid][2] if cid in titles else None,
            **value,
            **({"rated_at": iso_z(changed_at)} if entity == "rating" else {}),
        }
        for cid, value, changed_at in items
    ]
    rows.sort(key=lambda r: (r[value_key], r["content_id"]), reverse=True)  # newest first
    raw = request.query_params.get("cursor")
    if raw:
        after = list(decode_cursor(raw, [str, str]))
        rows = [r for r in rows if [r[value_key], r["content_id"]] < after]
    page = rows[:limit]
    nxt = (
        encode_cursor([page[-1][value_key], page[-1]["content_id"]]) if len(rows) > limit else None
    )
    return {"items": page, "next_cursor": nxt}


async def get_history(request: Request) -> Response:
    return respond(History, await _titled(request, "history", "last_watched_at"))


# -- ratings ----------------------------------------------------------------------------


async def put_rating(request: Request) -> Response:
    body = await read_body(request)
    return await _command(request, "rating.set", _content_id(request), body)


async def delete_rating(request: Request) -> Response:
    return await _command(request, "rating.remove", _content_id(request))


async def get_ratings(request: Request) -> Response:
    return respond(Ratings, await _titled(request, "rating", "rated_at"))


# -- up next ----------------------------------------------------------------------------


async def get_up_next(request: Request) -> Response:
    user, c = await _read(request)
    limit = int_param(request, "limit", 20, 1, 100)
    async with c.stores.pg.connection() as conn:
        current = await store.register(conn, user, "settings")
        rules = lib.ResumeRules(**current) if current else lib.DEFAULT_RULES
        items = await up_next(conn, user, rules)
    raw = request.query_params.get("cursor")
    if raw:
        after = list(decode_cursor(raw, [str, str]))
        items = [i for i in items if [i["at"], i["content_id"]] < after]
    page = items[:limit]
    nxt = encode_cursor([page[-1]["at"], page[-1]["content_id"]]) if len(items) > limit else None
    return respond(UpNext, {"items": page, "next_cursor": nxt})


async def hide_up_next(request: Request) -> Response:
    return await _command(request, "up_next.hide", _content_id(request))


routes = [
    Route("/v1/me/up-next", get_up_next, methods=["GET"]),
    Route("/v1/me/up-next/{content_id:path}/hide", hide_up_next, methods=["POST"]),
    Route("/v1/me/services", get_services, methods=["GET"]),
    Route("/v1/me/services", put_services, methods=["PUT"]),
    Route("/v1/me/settings", get_settings, methods=["GET"]),
    Route("/v1/me/settings", put_settings, methods=["PUT"]),
    Route("/v1/me/watchlist", get_watchlist, methods=["GET"]),
    Route("/v1/me/watchlist", post_watchlist, methods=["POST"]),
    Route("/v1/me/watchlist/{content_id:path}", delete_watchlist, methods=["DELETE"]),
    Route("/v1/me/history", get_history, methods=["GET"]),
    Route("/v1/me/history", post_history, methods=["POST"]),
    Route("/v1/me/history/{content_id:path}", delete_history, methods=["DELETE"]),
    Route("/v1/me/ratings", get_ratings, methods=["GET"]),
    Route("/v1/me/ratings/{content_id:path}", put_rating, methods=["PUT"]),
    Route("/v1/me/ratings/{content_id:path}", delete_rating, methods=["DELETE"]),
]
