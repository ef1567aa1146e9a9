"""Search and autocomplete over the catalog.

``GET /v1/search`` takes ``q`` (up to 2,000 characters; empty browses the popular list)
and filters (``kind``, ``genre``, ``year_from``, ``year_to``, ``platform``, ``region``,
``offer``, ``max_rating``; list filters repeat or take commas). Natural language in ``q``
is parsed into filters too ("funny sci-fi from the 90s on netflix"); explicit parameters
win over parsed ones, and ``intent=false`` turns parsing off. A word the catalog does not
know is corrected for ``did_you_mean``, and the query is retried corrected when it found
nothing; a query whose parsed filters left nothing is retried without them.

Your services: ``services=mine`` keeps only titles streaming on the signed-in user's
services (``PUT /v1/me/services``; the ``library`` scope): an offer in their region on any
of their platforms, of one of their offer types when they chose some. It narrows the
``platform`` and ``offer`` filters (a platform or offer type outside the services is 422)
and an explicit ``region`` replaces the stored one. Signed out it is 401, without services
409; ``services=any``, the default, changes nothing. An ``X-Consistency-Token`` from
``PUT /v1/me/services`` is waited for, so a search right after the change sees it.

Parental limits: a signed-in caller searches as their active profile (``X-Profile-Id``,
else the account's default profile; api/identity/profiles.py), and the profile's ``max_rating``
is a filter no parameter can lift: the limit applied is the stricter of the profile's
and an explicit ``max_rating``. Titles without a rating follow ``MGW_UNRATED_AS``.
Personal ranking: ``personalize=true`` (signed in) re-ranks the results by the caller's
taste as the recommender sees it (domain/recs/serving.personalized_order): relevance still
leads, and a title the caller would be recommended climbs by up to half its score.

Autocomplete drops title suggestions above the limit (their ratings are looked up for
the few ids it returns); genre and people suggestions are not titles and stay.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import Principal, optional
from api.consistency import HEADER, wait_for_token
from api.content import TitleIds
from api.context import ctx
from api.errors import Problem
from api.identity.profiles import RatingLimit, rating_limit
from api.pagination import decode_cursor, encode_cursor
from api.ranking import resolve_profile
from api.requests import int_param
from api.responses import Body, Page, respond
from api.search_analytics import publish_search
from core.metrics import SEARCH_SECONDS
from core.topics import LIBRARY
from domain.discovery.documents import fold
from domain.discovery.filters import FilterError, SearchFilters, parse_filters, stricter
from domain.discovery.planning import plan_query
from domain.recs.serving import personalized_order
from projections import library as library_store
from projections.content import ratings_of
from projections.registry import by_name
from projections.search_engine import SearchEngine, availability_summary

MAX_QUERY = 2000
_PARAMS = {
    "q", "limit", "cursor", "profile", "intent", "explain", "kind", "genre", "year_from",
    "year_to", "platform", "region", "offer", "max_rating", "services", "personalize",
}  # fmt: skip
SERVICES = ("any", "mine")


class Facet(Body):
    value: str
    count: int


class Facets(Body):
    """Counts over the first 500 matches (browse) or every match (search)."""

    genre: list[Facet]
    platform: list[Facet]
    decade: list[Facet]
    offer_type: list[Facet]


class PlatformOffers(Body):
    platform: str
    offer_types: list[str]


class AvailabilitySummary(Body):
    region: str | None
    platforms: list[PlatformOffers]


class Explain(Body):
    ranks: dict[str, int]
    fused: float
    features: dict[str, float]


class SearchHit(Body):
    id: str
    title: str
    year: int | None
    kind: str
    genres: list[str]
    external_ids: TitleIds
    availability: AvailabilitySummary
    score: float
    explain: Explain | None = Field(default=None, description="only with explain=true")


class SearchIntent(Body):
    """What ``q`` was read as (only the parts found), and whether it was applied."""

    text: str
    kind: str | None = None
    genres: list[str] = []
    year_from: int | None = None
    year_to: int | None = None
    platforms: list[str] = []
    offer_types: list[str] = []
    kids: bool = False
    people: list[str] = []
    matched: list[str] = []
    applied: bool


class AppliedFilters(Body):
    """The filters the results were found with (only those set)."""

    kinds: list[str] = []
    genres: list[str] = []
    year_from: int | None = None
    year_to: int | None = None
    platforms: list[str] = []
    region: str | None = None
    offer_types: list[str] = []
    max_rating: str | None = None
    people: list[str] = []
    unrated_as: str | None = None


class ProfileVersion(Body):
    name: str
    version: int


class SearchExplain(Body):
    """How the query was read and weighed: enough to answer "why is this first?" from one
    response (each item's own ranks and features are in its ``explain``)."""

    query_class: Literal["title", "keywords", "description"] = Field(
        description="title: up to 4 words; keywords: 5-8; description: more"
    )
    weights: dict[str, float] = Field(description="the fusion and re-rank weights used")
    retrievers: dict[str, int] = Field(description="candidates each retriever returned")
    salient_terms: list[str] | None = Field(
        default=None, description="a description's words full text matched on, rarest first"
    )


class SearchPage(Page):
    search_id: str
    query: str
    mode: Literal["browse", "search"]
    intent: SearchIntent | None
    filters: AppliedFilters
    services: Literal["any", "mine"]
    did_you_mean: str | None
    retried: list[Literal["corrected", "relaxed"]] | None
    profile: ProfileVersion
    personalized: bool
    degraded: bool
    items: list[SearchHit]
    total: int | None = Field(description="null when browsing")
    facets: Facets
    took_ms: float
    timings_ms: dict[str, float] | None = Field(default=None, description="only with explain=true")
    explain: SearchExplain | None = Field(default=None, description="only with explain=true")


class Suggestion(Body):
    """A title (``id``, ``title``, ``year``, ``kind``) or a genre or person (``value``)."""

    type: Literal["title", "genre", "person"]
    id: str | None = None
    title: str | None = None
    year: int | None = None
    kind: str | None = None
    value: str | None = None


class Suggestions(Body):
    query: str
    corrected: str | None
    items: list[Suggestion]


class IndexStatus(Body):
    queued: int
    documents: int
    embedded: int
    pending: int
    catalog_lag: int
    caught_up: bool


def engine(request: Request) -> SearchEngine:
    e: SearchEngine | None = getattr(ctx(request), "search", None)
    if e is None:
        raise Problem(503, "search is not running in this process", field=None)
    return e


def _params(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    unknown = sorted(set(out) - _PARAMS)
    if unknown:
        raise Problem(
            422,
            f"unknown parameter {', '.join(unknown)}; known: {', '.join(sorted(_PARAMS))}",
            field=unknown[0],
        )
    for k, v in out.items():
        if any("\x00" in x for x in v):
            raise Problem(422, f"{k} must not contain NUL", field=k)
    return out


def _query(params: dict[str, list[str]]) -> str:
    values = params.get("q", [])
    if len(values) > 1:
        raise Problem(422, "give q once", field="q")
    text = values[0] if values else ""
    if len(text) > MAX_QUERY:
        raise Problem(422, f"q must be at most {MAX_QUERY} characters", field="q")
    return text.strip()


def _flag(params: dict[str, list[str]], name: str, default: bool) -> bool:
    raw = (params.get(name) or [None])[0]
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes"):
        return True
    if raw.lower() in ("0", "false", "no"):
        return False
    raise Problem(422, f"{name} must be true or false", field=name)


def _fingerprint(*parts: Any) -> str:
    return uuid.uuid5(uuid.NAMESPACE_URL, json.dumps(parts, sort_keys=True, default=str)).hex[:12]


async def search(request: Request) -> Response:
    started = time.perf_counter()
    principal = await optional(request)
    eng = engine(request)
    params = _params(request)
    text = _query(params)
    limit = int_param(request, "limit", default=20, lo=1, hi=100)
    vocab = await eng.vocabulary()
    try:
        explicit = parse_filters(params, genres=vocab.genres)
    except FilterError as e:
        raise Problem(422, str(e), field=e.field) from None
    services = _services_param(params)
    if services == "mine":
        explicit = await _on_my_services(request, principal, explicit)
    explicit = _capped(explicit, await rating_limit(request, principal))
    profile_name = (params.get("profile") or [None])[0]
    profile = await resolve_profile(request, profile_name)
    weights = dict(profile.weights)

    intent = vocab.intent.parse(text, now_year=datetime.now(UTC).year)
    use_intent = _flag(params, "intent", True)
    plan = plan_query(text, intent, explicit, vocab.speller, use_intent=use_intent)
    where, remainder, corrected = plan.where, plan.remainder, plan.corrected
    did_you_mean = plan.did_you_mean
    personal = _flag(params, "personalize", False)
    if personal and principal is None:
        raise Problem(
            401,
            "personalize=true ranks by your taste: sign in (Authorization: Bearer ...)",
            field="personalize",
            headers={"WWW-Authenticate": 'Bearer realm="mgw"'},
        )
    fp = _fingerprint(
        text, where.as_dict(), profile.name, profile.version,
        principal.user_id if personal and principal else None,
    )  # fmt: skip
    cursor = (params.get("cursor") or [None])[0]
    notes: list[str] = []
    degraded = False
    timings: dict[str, float] = {}

    if plan.browse:
        # nothing left to match on: the popular list under the filters
        after = None
        if cursor:
            p, qv, cid, cfp = decode_cursor(cursor, (float, float, str, str))
            if cfp != fp:
                raise Problem(422, "cursor belongs to a different search", field="cursor")
            after = (p, qv, cid)
        page, facets = await eng.browse(where, limit + 1, after)
        more = len(page) > limit
        page = page[:limit]
        items = [_item(h, None, where.region) for h in page]
        total = None
        next_cursor = (
            encode_cursor([page[-1].popularity, page[-1].quality, page[-1].content_id, fp])
            if more and page else None
        )  # fmt: skip
        mode = "browse"
    else:
        offset = 0
        if cursor:
            offset, cfp = decode_cursor(cursor, (int, str))
            if cfp != fp or offset < 0:
                raise Problem(422, "cursor belongs to a different search", field="cursor")
        ranked = await eng.retrieve(
            remainder, where, weights, also=corrected, use=plan.retrievers,
            query_class=plan.query_class,
        )  # fmt: skip
        if not ranked.items and corrected:
            ranked = await eng.retrieve(corrected, where, weights)
            notes.append("corrected")
        if not ranked.items and use_intent and where != explicit:
            ranked = await eng.retrieve(text, explicit, weights)
            where = explicit
            notes.append("relaxed")
        if personal and principal is not None and ranked.items:
            ranked.items = await _personalized(request, principal.user_id, ranked.items)
        degraded = ranked.degraded
        facets = ranked.facets
        timings = ranked.timings
        window = ranked.items[offset : offset + limit]
        items = [_item(h, c, where.region, params) for c, h in window]
        total = len(ranked.items)
        more = offset + limit < total
        next_cursor = encode_cursor([offset + limit, fp]) if more else None
        mode = "search"

    took = (time.perf_counter() - started) * 1000
    SEARCH_SECONDS.labels("search").observe(took / 1000)
    search_id = uuid.uuid4().hex
    body: dict[str, Any] = {
        "search_id": search_id,
        "query": text,
        "mode": mode,
        "intent": {**intent.as_dict(), "applied": use_intent} if text else None,
        "filters": where.as_dict(),
        "services": services,
        "did_you_mean": did_you_mean,
        "retried": notes or None,
        "profile": {"name": profile.name, "version": profile.version},
        "personalized": personal and mode == "search",
        "degraded": degraded,
        "items": items,
        "total": total,
        "facets": facets,
        "next_cursor": next_cursor,
        "took_ms": round(took, 2),
    }
    if _flag(params, "explain", False):
        body["timings_ms"] = timings
        if mode == "search":
            body["explain"] = {
                "query_class": ranked.query_class,
                "weights": ranked.weights,
                "retrievers": ranked.retrievers,
                "salient_terms": [t for t, _ in await eng.salient_terms(remainder)]
                if ranked.query_class == "description"
                else None,
            }
    task = BackgroundTask(
        publish_search,
        ctx(request),
        search_id=search_id,
        query=text,
        normalized_query=fold(text),
        filters=where.as_dict(),
        result_count=total if total is not None else len(items),
        result_ids=[i["id"] for i in items],
        profile=profile.name,
        profile_version=profile.version,
        latency_ms=took,
        degraded=degraded,
        user_id=principal.user_id if principal else None,
    )
    return respond(SearchPage, body, background=task)


async def _personalized(request: Request, user_id: str, items: list[Any]) -> list[Any]:
    """The results re-ranked by the user's affinity from the recommender
    (domain/recs/serving.personalized_order); unchanged while it is starting."""
    recs = ctx(request).recs
    if recs is None:
        return items
    view = await recs.ready()
    catalog = view.catalog
    scored = view.score(await recs.user_facts(user_id))
    # what the user has seen or refused is neutral here, as the recommender never offers
    # it: a search for a mood should surface new titles, and a title searched by name
    # is found by relevance anyway
    scores = scored.scores.copy()
    scores[scored.excluded] = 0.0
    top = float(scores.max()) if scores.size else 0.0
    affinity = [
        float(scores[catalog.index[c.content_id]]) / top
        if top > 0 and c.content_id in catalog.index
        else 0.0
        for c, _ in items
    ]
    order = personalized_order([c.score for c, _ in items], affinity)
    return [items[i] for i in order]


def _services_param(params: dict[str, list[str]]) -> str:
    values = params.get("services", [])
    if len(values) > 1:
        raise Problem(422, "give services once", field="services")
    raw = values[0].strip().lower() if values else ""
    if not raw:
        return "any"
    if raw not in SERVICES:
        raise Problem(422, f"services must be mine or any, not {values[0]!r}", field="services")
    return raw


async def _on_my_services(
    request: Request, principal: Principal | None, filters: SearchFilters
) -> SearchFilters:
    """``filters`` narrowed to the caller's services: their region (unless ``region`` was
    given), any of their platforms, and their offer types when they chose some; an explicit
    ``platform`` or ``offer`` is kept to those within the services."""
    if principal is None:
        raise Problem(
            401,
            "services=mine searches your services: sign in (Authorization: Bearer <access token>)",
            field="services",
            headers={"WWW-Authenticate": 'Bearer realm="mgw"'},
        )
    if not principal.has("library"):
        raise Problem(
            403,
            "services=mine reads your library: this needs the 'library' scope",
            field="services",
            headers={
                "WWW-Authenticate": 'Bearer realm="mgw", error="insufficient_scope", '
                'error_description="needs library", scope="library"'
            },
        )
    c = ctx(request)
    token = request.headers.get(HEADER)
    if token and token.startswith(f"{LIBRARY.name}:"):
        # read-your-writes after PUT /v1/me/services (other topics' tokens are not ours)
        await wait_for_token(
            request, c.stores.pg, [by_name("library")], c.settings.consistency_wait_s
        )
    async with c.stores.pg.connection() as conn:
        mine = await library_store.register(conn, principal.user_id, "services")
    platforms: tuple[str, ...] = tuple((mine or {}).get("platforms") or ())
    if not platforms:
        raise Problem(409, "set your services first: PUT /v1/me/services", field="services")
    if filters.platforms:
        outside = [p for p in filters.platforms if p not in platforms]
        if outside:
            raise Problem(
                422,
                f"platform {', '.join(outside)} is not one of your services"
                f" ({', '.join(platforms)})",
                field="platform",
            )
        platforms = filters.platforms
    offer_types: tuple[str, ...] = tuple(mine.get("offer_types") or ())  # (): every type
    if filters.offer_types:
        outside = [t for t in filters.offer_types if offer_types and t not in offer_types]
        if outside:
            raise Problem(
                422,
                f"offer {', '.join(outside)} is not one of your services' offer types"
                f" ({', '.join(offer_types)})",
                field="offer",
            )
        offer_types = filters.offer_types
    return dataclasses.replace(
        filters,
        platforms=platforms,
        region=filters.region or mine["region"],
        offer_types=offer_types,
    )


def _capped(filters: SearchFilters, cap: RatingLimit) -> SearchFilters:
    """The filters under the active profile's limit: the stricter of the profile's
    ``max_rating`` and the one asked for (a limited profile cannot lift its own)."""
    effective = stricter(filters.max_rating, cap.max_rating)
    return dataclasses.replace(
        filters,
        max_rating=effective,
        unrated_as=cap.unrated_as if effective is not None else None,
    )


def _item(
    h: Any, c: Any, region: str | None, params: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": h.content_id,
        "title": h.title,
        "year": h.year,
        "kind": h.kind,
        "genres": h.genres,
        "external_ids": {"imdb": h.imdb_id, "tmdb": h.tmdb_id},
        "availability": availability_summary(h, region),
        "score": round(c.score, 6) if c is not None else round(h.popularity + h.quality / 10, 6),
    }
    if c is not None and params is not None and _flag(params, "explain", False):
        item["explain"] = {"ranks": c.ranks, "fused": c.fused, "features": c.features}
    return item


async def autocomplete(request: Request) -> Response:
    principal = await optional(request)
    eng = engine(request)
    text = request.query_params.get("q", "")
    if len(text) > 200:
        raise Problem(422, "q must be at most 200 characters", field="q")
    if "\x00" in text:
        raise Problem(422, "q must not contain NUL", field="q")
    limit = int_param(request, "limit", default=10, lo=1, hi=25)
    cap = await rating_limit(request, principal)
    started = time.perf_counter()
    vocab = await eng.vocabulary()
    if cap.max_rating is None:
        items, corrected = vocab.autocomplete.complete(text, limit, correct=vocab.speller.correct)
    else:
        # The in-memory index knows no ratings: ask it for more titles than shown and keep
        # those the profile may see (one indexed lookup of a hundred ids at most).
        items, corrected = vocab.autocomplete.complete(
            text, min(limit * AUTOCOMPLETE_OVERFETCH, 100), correct=vocab.speller.correct
        )
        items = await _within(request, items, cap, limit)
    SEARCH_SECONDS.labels("autocomplete").observe(time.perf_counter() - started)
    return respond(Suggestions, {"query": text, "corrected": corrected, "items": items})


#: how many title suggestions a limited profile's autocomplete considers per one shown
AUTOCOMPLETE_OVERFETCH = 4


async def _within(
    request: Request, items: list[dict[str, Any]], cap: RatingLimit, limit: int
) -> list[dict[str, Any]]:
    ids = [str(i["id"]) for i in items if i.get("type") == "title"]
    async with ctx(request).stores.pg.connection() as conn:
        rated = await ratings_of(conn, ids) if ids else {}
    titles = [i for i in items if i.get("type") == "title" and cap.allows(rated.get(str(i["id"])))]
    others = [i for i in items if i.get("type") != "title"]
    return titles[:limit] + others[:3]


async def index_status(request: Request) -> Response:
    """How far the search index is: documents queued, indexed and embedded, and whether
    it has caught up with the catalog's projectors (``caught_up``)."""
    from api.health import projector_lag
    from projections.search_index import status

    c = ctx(request)
    body: dict[str, Any] = dict(await status(c.stores.pg))
    if not engine(request).vectors_enabled:
        body["pending"] = 0  # MGW_EMBEDDINGS=none: no vector is ever coming
    lags = await projector_lag(c)
    body["catalog_lag"] = sum(
        v["lag"]
        for k, v in lags.items()
        if k in ("catalog", "resolution", "availability", "search")
    )
    body["caught_up"] = body["catalog_lag"] == 0 and body["queued"] == 0 and body["pending"] == 0
    return respond(IndexStatus, body)


routes: list[Route] = [
    Route("/v1/search", search, methods=["GET"]),
    Route("/v1/search/status", index_status, methods=["GET"]),
    Route("/v1/autocomplete", autocomplete, methods=["GET"]),
]
