"""Ranking profiles: read and set the fusion and re-rank weights (admin).

Routes:

* ``GET /v1/admin/ranking/profiles``: the current version of every profile ("default"
  is always listed; with nothing set it is the built-in version 0).
* ``GET /v1/admin/ranking/profiles/{name}``: the current version and the stored history,
  newest first (``limit``, ``cursor``).
* ``PUT /v1/admin/ranking/profiles/{name}`` ``{"weights": {...}, "description": "..."}``:
  both optional, at least one given. Weights are a partial update merged onto the
  current version. Answers 202 with the position (``X-Consistency-Token``).

**Versions.** The PUT waits until the ranking projection has applied the whole ranking
topic (503 if it cannot within ``consistency_wait_s``), appends version = current + 1,
then waits for its own event. Two PUTs racing on one profile can pick the same version;
the projector keeps the first in log order and ignores the other, whose PUT answers 409
(the event stays on the log as a no-op; re-read and retry). If the projection does not
reach the event in time the answer is still 202 with ``"confirmed": false``: the write is
on the log, and whether it won shows once the token is covered.

**Who may:** reading profiles needs the ``analytics:read`` scope (support, admin),
setting one ``ranking:write`` (admin, or an API key with that scope).

**For the search route:** ``resolve_profile`` returns the profile a search should rank
with. It keeps every profile's current version in process for ``CACHE_TTL_S``; a request
carrying a consistency token of the ranking topic (a PUT's answer) bypasses the cache and
waits for that position, so a PUT followed by a search sees the new version.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import Any

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import HEADER as CONSISTENCY_HEADER
from api.consistency import wait_for_token, wait_until_covered
from api.context import AppContext, accepted, ctx
from api.errors import Problem
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param, read_json, reject_nul
from core.events import Event
from core.topics import RANKING
from domain.discovery.ranking import (
    DEFAULT_PROFILE,
    DEFAULT_WEIGHTS,
    DESCRIPTION_MAX,
    PROFILE_NAME,
    RankingProfile,
    WeightError,
    validate_weights,
)
from projections.ranking import (
    current_profile,
    current_version,
    list_profiles,
    profile_history,
    stored_version,
)
from projections.registry import by_name
from streams.log import InvalidToken, Position

PROJECTOR = "ranking"
CACHE_TTL_S = 1.0

# -- waiting on the ranking projection ----------------------------------------------


async def _applied(c: AppContext, pos: Position) -> bool:
    """True once the ranking projection covers ``pos``; False after consistency_wait_s."""
    return await wait_until_covered(c.stores.pg, [PROJECTOR], pos, c.settings.consistency_wait_s)


def _not_caught_up(what: str, wait_s: float) -> Problem:
    return Problem(
        503,
        f"the ranking projection has not caught up with {what} within {wait_s:g}s; retry",
        field=CONSISTENCY_HEADER,
        headers={"Retry-After": "1"},
    )


async def _catch_up(c: AppContext) -> None:
    """Wait until every ranking event appended so far is applied (503 if it is not)."""
    ends = await c.log.end_offsets(RANKING.name)
    end = ends.get(0, 0)
    if end > 0 and not await _applied(c, Position(RANKING.name, 0, end - 1)):
        raise _not_caught_up("the ranking topic", c.settings.consistency_wait_s)


# -- the profile cache, for the search route ---------------------------------------------


@dataclass(slots=True)
class _Cached:
    loaded_at: float
    profiles: dict[str, RankingProfile]
    refreshing: bool = False


# One entry per database pool (several apps can share a process, tests do).
_CACHE: weakref.WeakKeyDictionary[AsyncConnectionPool, _Cached] = weakref.WeakKeyDictionary()


async def _profiles(pg: AsyncConnectionPool, *, fresh: bool) -> dict[str, RankingProfile]:
    hit = _CACHE.get(pg)
    if hit is not None and not fresh:
        # While one request refreshes, the others keep using the previous answer.
        if hit.refreshing or time.monotonic() - hit.loaded_at < CACHE_TTL_S:
            return hit.profiles
        hit.refreshing = True
    try:
        started = time.monotonic()
        async with pg.connection() as conn:
            versions = await list_profiles(conn)
        profiles = {v.profile.name: v.profile for v in versions}
        _CACHE[pg] = _Cached(started, profiles)
        return profiles
    finally:
        if hit is not None:
            hit.refreshing = False


def forget_profiles(pg: AsyncConnectionPool) -> None:
    """Drop this process's cached profiles (after a PUT it has seen applied)."""
    _CACHE.pop(pg, None)


async def resolve_profile(
    request_or_ctx: Request | AppContext,
    name: str | None,
    consistency_token: str | None = None,
) -> RankingProfile:
    """The profile a search ranks with: ``name`` or "default" when None.

    Unknown or malformed names raise Problem(422, field="profile"). A
    ``consistency_token`` (default: a request's ``X-Consistency-Token`` header, when given
    a request) of the ranking topic makes it wait (up to consistency_wait_s,
    then 503) until that write is applied and read past the cache; a token of another
    topic is the search route's business and is ignored here. A malformed token is 400.
    Otherwise the answer comes from a per-process cache at most ``CACHE_TTL_S`` old."""
    if isinstance(request_or_ctx, Request):
        c = ctx(request_or_ctx)
        if consistency_token is None:
            consistency_token = request_or_ctx.headers.get(CONSISTENCY_HEADER)
    else:
        c = request_or_ctx
    wanted = DEFAULT_PROFILE.name if name is None else name
    if not PROFILE_NAME.match(wanted):
        raise Problem(422, f"{wanted!r} is not a ranking profile name", field="profile")
    fresh = False
    if consistency_token:
        try:
            pos = Position.parse(consistency_token)
        except InvalidToken as exc:
            raise Problem(
                400, f"malformed consistency token: {exc}", field=CONSISTENCY_HEADER
            ) from None
        if pos.topic == RANKING.name:
            if pos.partition >= RANKING.partitions:
                raise Problem(
                    400,
                    f"topic {pos.topic!r} has no partition {pos.partition}",
                    field=CONSISTENCY_HEADER,
                )
            if not await _applied(c, pos):
                raise _not_caught_up(consistency_token, c.settings.consistency_wait_s)
            fresh = True
    profiles = await _profiles(c.stores.pg, fresh=fresh)
    found = profiles.get(wanted)
    if found is None and not fresh:
        # Set in the last second by another process? One indexed lookup settles it.
        async with c.stores.pg.connection() as conn:
            found = await current_profile(conn, wanted)
    if found is None:
        raise Problem(422, f"no ranking profile named {wanted!r}", field="profile")
    return found


# -- routes ------------------------------------------------------------------


class ProfileIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: a partial update: only the weights sent change; validated by validate_weights
    weights: dict[str, Any] = Field(default_factory=dict)
    #: omitted: the current description stays
    description: str | None = Field(default=None, max_length=DESCRIPTION_MAX)

    @field_validator("description")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        return reject_nul(v)  # type: ignore[no-any-return]


def _name(request: Request) -> str:
    name: str = request.path_params["name"]
    if not PROFILE_NAME.match(name):
        raise Problem(
            422,
            "profile names are 1-64 characters of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit",
            field="name",
        )
    return name


def _weights(raw: dict[str, Any], base: RankingProfile | None) -> dict[str, float]:
    try:
        return validate_weights(raw, base=base.weights if base else DEFAULT_WEIGHTS)
    except WeightError as exc:
        where = f"weights.{exc.key}" if exc.key else "weights"
        raise Problem(422, f"{where}: {exc}", field=where) from None


async def get_profiles(request: Request) -> Response:
    await require(request, "analytics:read")
    c = ctx(request)
    await wait_for_token(request, c.stores.pg, [by_name(PROJECTOR)], c.settings.consistency_wait_s)
    async with c.stores.pg.connection() as conn:
        versions = await list_profiles(conn)
    return JSONResponse({"items": [v.as_dict() for v in versions]})


async def get_profile(request: Request) -> Response:
    await require(request, "analytics:read")
    c = ctx(request)
    name = _name(request)
    limit = int_param(request, "limit", 20, 1, 100)
    raw = request.query_params.get("cursor")
    before = decode_cursor(raw, (int,))[0] if raw else None
    await wait_for_token(request, c.stores.pg, [by_name(PROJECTOR)], c.settings.consistency_wait_s)
    async with c.stores.pg.connection() as conn:
        current = await current_version(conn, name)
        if current is None:
            raise Problem(404, f"no ranking profile named {name!r}", field="name")
        history = await profile_history(conn, name, limit=limit + 1, before=before)
    page, more = history[:limit], len(history) > limit
    return JSONResponse(
        {
            "profile": current.as_dict(),
            "history": [v.as_dict() for v in page],
            "next_cursor": encode_cursor([page[-1].profile.version]) if more else None,
        }
    )


async def put_profile(request: Request) -> Response:
    admin = await require(request, "ranking:write")
    c = ctx(request)
    name = _name(request)
    set_by = admin.user_id
    body = await read_json(request, ProfileIn)
    if not body.weights and body.description is None:
        raise Problem(422, "send weights, a description, or both", field="weights")
    _weights(body.weights, None)  # fail fast on names and bounds, before any waiting
    await _catch_up(c)
    async with c.stores.pg.connection() as conn:
        found = await current_version(conn, name)
    base = found.profile if found else None
    weights = _weights(body.weights, base)
    version = (base.version if base else 0) + 1
    if body.description is not None:
        description = body.description
    else:  # the built-in default's description does not describe a set profile
        description = base.description if base and base.version > 0 else ""
    event = Event(
        "RankingProfileSet",
        name,
        {
            "profile": name,
            "version": version,
            "weights": weights,
            "description": description,
            "set_by": set_by,
        },
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )
    pos = await c.publisher.publish(event)
    confirmed = await _applied(c, pos)
    if confirmed:
        async with c.stores.pg.connection() as conn:
            stored = await stored_version(conn, name, version)
        if stored is None:  # applied past it without a row: the event was dead-lettered
            raise Problem(500, "the ranking projector refused the profile; nothing changed")
        if stored.event_id != event.event_id:
            raise Problem(
                409,
                f"version {version} of {name!r} was set by a concurrent request;"
                " read the profile and send the change again",
                field="name",
            )
        forget_profiles(c.stores.pg)
    return accepted(
        pos,
        name=name,
        version=version,
        weights=weights,
        description=description,
        confirmed=confirmed,
    )


routes: list[Route] = [
    Route("/v1/admin/ranking/profiles", get_profiles, methods=["GET"]),
    Route("/v1/admin/ranking/profiles/{name}", get_profile, methods=["GET"]),
    Route("/v1/admin/ranking/profiles/{name}", put_profile, methods=["PUT"]),
]
