"""Recommendations over REST: a ranked list, home-screen rows, similar titles, feedback.

* ``GET /v1/me/recommendations?limit=20&region=&services=mine&row=top_picks``: items with
  ``score``, ``reason`` ("Because you watched Heat" names a title from the caller's own
  history), the ``model_version`` that ranked them, the ``experiment`` the caller is in
  (when one runs on this surface) and a ``request_id`` for activity reports.
* ``GET /v1/me/recommendations/rows?limit=10``: rows for a home screen (top picks,
  because you watched X, trending on each of my services, leaving my services soon).
* ``GET /v1/content/{id}/similar?limit=10``: no sign-in needed (a signed-in caller's
  parental limit still applies).
* ``POST /v1/me/recommendations/feedback`` ``{"content_id", "kind": "not_interested" |
  "more_like_this"}``: 202 with a consistency token; the next answer reflects it.
  ``DELETE /v1/me/recommendations/feedback/{id}`` takes it back.

Never recommended: what the caller finished, is watching, rated or marked not interested, and
what their active profile's parental limit forbids; with ``services=mine`` only titles
streaming on their services. The user's scope is ``library`` (it reads their library).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.activity import ActivityIn, activity_event
from api.authn import Principal, optional, require
from api.consistency import wait_for_token
from api.context import accepted, ctx
from api.errors import Problem
from api.experiment_assignment import assign
from api.identity.profiles import rating_limit
from api.library import my_services
from api.requests import int_param, read_json, reject_nul
from api.responses import Body, respond
from core.ids import new_id, utcnow
from domain.discovery.documents import filter_keys
from domain.recs import serving
from projections import moderation
from projections.base import fetch_rows
from projections.recs_engine import Catalog, RecsEngine, Scored, View, did
from projections.registry import by_name

SURFACE = "recommendations"
ROWS = ("top_picks", "because_you_watched", "trending", "leaving_soon")
LEAVING_WINDOW = timedelta(days=30)
#: rows of "because you watched": one per recent favourite, at most
ANCHORS = 2


class Recommended(Body):
    id: str
    title: str
    year: int | None
    kind: str
    score: float
    reason: str = Field(description="why, in words: the row's title or the title it is like")


class ExperimentVariant(Body):
    key: str
    variant: str


class _Ranked(Body):
    model_version: str = Field(description='the model that ranked it, or "popularity"')
    experiment: ExperimentVariant | None
    request_id: str = Field(description="send back with feedback and activity")


class Recommendations(_Ranked):
    row: str
    items: list[Recommended]


class RecommendationRow(Body):
    id: str = Field(description="top_picks, because_you_watched:<id>, trending:<platform>, ...")
    title: str
    items: list[Recommended]


class RecommendationRows(_Ranked):
    rows: list[RecommendationRow]


class Similar(Body):
    id: str
    items: list[Recommended]
    model_version: str


def engine(request: Request) -> RecsEngine:
    e: RecsEngine | None = ctx(request).recs
    if e is None:
        raise Problem(503, "recommendations are starting; retry", headers={"Retry-After": "1"})
    return e


@dataclass(frozen=True, slots=True)
class Scope:
    """What a list may hold for this caller and request."""

    admit: Callable[[int], bool]
    allowed: np.ndarray | None
    platforms: tuple[str, ...]
    region: str | None


def _region(request: Request) -> str | None:
    raw = request.query_params.get("region")
    if raw is None or raw == "":
        return None
    if not (len(raw) == 2 and raw.isalpha()):
        raise Problem(422, "region must be a two-letter country code, like US", field="region")
    return raw.upper()


async def _scope(request: Request, principal: Principal | None, catalog: Catalog) -> Scope:
    services = request.query_params.get("services", "any")
    if services not in ("any", "mine"):
        raise Problem(422, f"services must be mine or any, not {services!r}", field="services")
    region = _region(request)
    platforms: tuple[str, ...] = ()
    offer_types: tuple[str, ...] = ()
    if services == "mine":
        mine = await my_services(request)
        platforms = tuple(mine.get("platforms") or ())
        offer_types = tuple(mine.get("offer_types") or ())
        region = region or mine.get("region")
    keys = filter_keys(region, platforms, offer_types)
    offers = catalog.offer_keys
    if keys is None:
        admit: Callable[[int], bool] = _always
    else:
        wanted = frozenset(keys)

        def admit(i: int) -> bool:
            return not wanted.isdisjoint(offers[i])

    limit = await rating_limit(request, principal)
    return Scope(admit, catalog.allowed(limit), platforms, region)


def _always(_: int) -> bool:
    return True


def _item(catalog: Catalog, i: int, score: float, reason: str) -> dict[str, Any]:
    return {
        "id": catalog.ids[i],
        "title": catalog.titles[i],
        "year": catalog.years[i],
        "kind": catalog.kinds[i],
        "score": round(float(score), 6),
        "reason": reason,
    }


async def _prepare(request: Request) -> tuple[Principal, View, Scored, Scope]:
    principal = await require(request, "library")
    e = engine(request)
    c = ctx(request)
    await wait_for_token(
        request, c.stores.pg, [by_name("interactions")], c.settings.consistency_wait_s
    )
    v = await e.ready()
    facts = await e.user_facts(principal.user_id)
    scope = await _scope(request, principal, v.catalog)
    return principal, v, v.score(facts, region=scope.region), scope


def _variant(params: dict[str, Any]) -> tuple[bool, float]:
    """What an experiment's variant may change: the model (``"popularity"`` ranks without
    the personal model) and the diversity (MMR lambda, 0..1)."""
    model = params.get("model", "default") != "popularity"
    div = params.get("diversity", serving.DIVERSITY_LAMBDA)
    try:
        diversity = min(max(float(div), 0.0), 1.0)
    except (TypeError, ValueError):
        diversity = serving.DIVERSITY_LAMBDA
    return model, diversity


async def recommendations(request: Request) -> Response:
    row = request.query_params.get("row", "top_picks")
    if row not in ROWS:
        raise Problem(422, f"row must be one of {', '.join(ROWS)}", field="row")
    limit = int_param(request, "limit", 20, 1, 100)
    built, meta = await _answer(request, limit, only=row)
    body = {"items": built[0]["items"] if built else [], "row": row, **meta}
    return respond(Recommendations, body)


async def rows(request: Request) -> Response:
    limit = int_param(request, "limit", 10, 1, 50)
    built, meta = await _answer(request, limit, only=None)
    return respond(RecommendationRows, {"rows": built, **meta})


async def _answer(
    request: Request, limit: int, *, only: str | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows asked for, and what every answer says about itself: the model that
    ranked it, the caller's experiment and variant, a request id for activity reports."""
    principal, v, scored, scope = await _prepare(request)
    assignment = await assign(ctx(request), principal.user_id, SURFACE)
    use_model, diversity = _variant(assignment.params if assignment else {})
    if not use_model:
        scored = v.score(scored.facts, model=False, region=scope.region)
    built = await _rows(request, v, scored, scope, limit, diversity, only=only)
    meta = {
        "model_version": v.version if use_model else "popularity",
        "experiment": (
            {"key": assignment.experiment, "variant": assignment.variant} if assignment else None
        ),
        "request_id": new_id(),
    }
    return built, meta


async def _rows(
    request: Request,
    e: View,
    scored: Scored,
    scope: Scope,
    limit: int,
    diversity: float,
    *,
    only: str | None,
) -> list[dict[str, Any]]:
    catalog = e.catalog
    out: list[dict[str, Any]] = []
    shown: set[int] = set()

    def add(row_id: str, title: str, picked: list[int], reasons: list[str]) -> None:
        if picked:
            out.append(
                {
                    "id": row_id,
                    "title": title,
                    "items": [
                        _item(catalog, i, scored.scores[i], r)
                        for i, r in zip(picked, reasons, strict=True)
                    ],
                }
            )
            shown.update(picked)

    if only in (None, "top_picks"):
        picked = e.pick(
            scored, limit=limit, admit=scope.admit, allowed=scope.allowed, diversity=diversity
        )
        because = e.because(scored, picked)
        add("top_picks", "Top picks for you", picked,
            [serving.reason_text(b, trending_on=_on(scope)) for b in because])  # fmt: skip

    def titled_row(
        row_id: str,
        title: str,
        source: Scored,
        *,
        restrict: list[int] | None = None,
        admit: Callable[[int], bool] = scope.admit,
    ) -> None:
        """A row whose every item has the row's title as its reason, in score order,
        leaving out what rows above it show."""
        picked = e.pick(
            source,
            limit=limit,
            admit=admit,
            allowed=scope.allowed,
            diversity=1.0,
            restrict=None if restrict is None else np.asarray(restrict, dtype=np.int64),
            skip=shown if only is None else None,
        )
        add(row_id, title, picked, [title] * len(picked))

    if only in (None, "because_you_watched"):
        for anchor, fav in _anchors(e, scored)[: 1 if only else ANCHORS]:
            similar = [j for j, _ in e.similar(anchor, max(limit * 4, 60))]
            if similar:
                titled_row(f"because_you_watched:{catalog.ids[anchor]}",
                           serving.reason_text(fav), scored, restrict=similar)  # fmt: skip
    if only in (None, "trending"):
        trend = e.score({}, region=scope.region)  # popularity alone: nobody's taste
        trend_scored = Scored(trend.scores, None, scored.facts, scored.excluded)
        for platform in scope.platforms[:2] or (None,):
            if platform is None:
                titled_row("trending:all", "Trending now", trend_scored)
            else:
                titled_row(f"trending:{platform}", f"Trending on {platform}", trend_scored,
                           admit=_on_platform(catalog, scope.region, platform))  # fmt: skip
    if only in (None, "leaving_soon") and scope.platforms:
        leaving = await _leaving(request, catalog, scope)
        if leaving:
            titled_row("leaving_soon", "Leaving your services soon", scored, restrict=leaving)
    return out


def _on_platform(catalog: Catalog, region: str | None, platform: str) -> Callable[[int], bool]:
    key = frozenset(filter_keys(region, [platform], []) or ())
    offers = catalog.offer_keys

    def admit(i: int) -> bool:
        return not key.isdisjoint(offers[i])

    return admit


def _on(scope: Scope) -> str | None:
    return scope.platforms[0] if len(scope.platforms) == 1 else None


def _anchors(e: View, scored: Scored) -> list[tuple[int, serving.Because]]:
    """The user's most recent favourites the model knows: finished or liked titles."""
    catalog = e.catalog
    served = e.served
    if served is None:
        return []
    liked = [
        f
        for f in scored.facts.values()
        if (f.facts.finished > 0 or f.facts.more_like_this or (f.facts.rating or 0) >= 7)
        and not f.facts.not_interested
        and f.content_id in served.model_ix
        and f.content_id in catalog.index
    ]
    liked.sort(key=lambda f: (f.last_at, f.content_id), reverse=True)
    return [
        (catalog.index[f.content_id],
         serving.Because(catalog.titles[catalog.index[f.content_id]], did(f.facts)))
        for f in liked
    ]  # fmt: skip


async def _leaving(request: Request, catalog: Catalog, scope: Scope) -> list[int]:
    """Titles whose every current offer on my services ends within the window."""
    async with ctx(request).stores.pg.connection() as conn:
        rows = await fetch_rows(
            conn,
            "WITH ending AS (SELECT DISTINCT t.content_id FROM availability a"
            " JOIN platform_titles t ON t.platform = a.platform AND t.platform_id = a.platform_id"
            " WHERE a.region = %(region)s AND a.platform = ANY(%(platforms)s)"
            " AND a.available_until > now() AND a.available_until <= now() + %(window)s)"
            " SELECT e.content_id FROM ending e"
            " JOIN platform_titles t ON t.content_id = e.content_id"
            " JOIN availability a ON a.platform = t.platform AND a.platform_id = t.platform_id"
            " AND a.region = %(region)s AND a.platform = ANY(%(platforms)s)"
            " AND (a.available_from IS NULL OR a.available_from <= now())"
            " AND (a.available_until IS NULL OR a.available_until > now())"
            " GROUP BY e.content_id"
            " HAVING NOT bool_or(a.available_until IS NULL"
            " OR a.available_until > now() + %(window)s)",
            {
                "region": scope.region or "US",
                "platforms": list(scope.platforms),
                "window": LEAVING_WINDOW,
            },  # fmt: skip
        )
    return [catalog.index[r[0]] for r in rows if r[0] in catalog.index]


async def similar(request: Request) -> Response:
    cid = request.path_params["content_id"]
    if not 0 < len(cid) <= 128 or "\x00" in cid:
        raise Problem(422, "must be 1 to 128 characters", field="content_id")
    limit = int_param(request, "limit", 10, 1, 50)
    principal = await optional(request)
    v = await engine(request).ready()
    catalog = v.catalog
    i = catalog.index.get(cid)
    if i is None:
        raise Problem(404, f"no title {cid!r}", field="content_id")
    async with ctx(request).stores.pg.connection() as conn:
        # hidden since the catalog was last loaded (it reloads within seconds)
        if await moderation.hidden(conn, cid):
            raise Problem(404, f"no title {cid!r}", field="content_id")
    scope = await _scope(request, principal, catalog)
    allowed = scope.allowed
    near = [
        (j, s)
        for j, s in v.similar(i, max(limit * 4, 60))
        if scope.admit(j) and (allowed is None or bool(allowed[j]))
    ][:limit]
    reason = f"Similar to {catalog.titles[i]}"
    return respond(
        Similar,
        {
            "id": cid,
            "items": [_item(catalog, j, s, reason) for j, s in near],
            "model_version": v.version,
        },
    )


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_id: str = Field(min_length=1, max_length=128)
    kind: Literal["not_interested", "more_like_this"]
    request_id: str | None = Field(default=None, min_length=1, max_length=128)

    _nul = field_validator("content_id", "request_id")(reject_nul)


async def restore(request: Request) -> Response:
    """``DELETE /v1/me/recommendations/feedback/{content_id}``: take back a "not
    interested" or "more like this"; the title may be recommended again."""
    user = (await require(request, "library")).user_id
    cid = request.path_params["content_id"]
    if not 0 < len(cid) <= 128 or "\x00" in cid:
        raise Problem(422, "must be 1 to 128 characters", field="content_id")
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 128:
        raise Problem(422, "must be 1 to 128 characters", field="Idempotency-Key")
    a = ActivityIn(
        event_id=key or new_id(), kind="interest_restored", content_id=cid, surface=SURFACE
    )
    pos = await ctx(request).publisher.publish(activity_event(user, a, utcnow()))
    return accepted(pos, kind="interest_restored", content_id=cid)


async def feedback(request: Request) -> Response:
    user = (await require(request, "library")).user_id
    body = await read_json(request, FeedbackIn)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 0 < len(key) <= 128:
        raise Problem(422, "must be 1 to 128 characters", field="Idempotency-Key")
    a = ActivityIn(
        event_id=key or new_id(),
        kind=body.kind,
        content_id=body.content_id,
        surface=SURFACE,
        request_id=body.request_id,
    )
    pos = await ctx(request).publisher.publish(activity_event(user, a, utcnow()))
    return accepted(pos, kind=body.kind, content_id=body.content_id)


routes = [
    Route("/v1/me/recommendations", recommendations, methods=["GET"]),
    Route("/v1/me/recommendations/rows", rows, methods=["GET"]),
    Route("/v1/me/recommendations/feedback", feedback, methods=["POST"]),
    Route("/v1/me/recommendations/feedback/{content_id}", restore, methods=["DELETE"]),
    Route("/v1/content/{content_id}/similar", similar, methods=["GET"]),
]
