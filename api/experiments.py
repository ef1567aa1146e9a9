"""A/B experiments: define, start and stop them (admin), read their results, and assign
users to variants for the routes that serve a surface.

Routes:

* ``PUT /v1/admin/experiments/{key}`` ``{"surface", "variants": [{"name", "weight",
  "params"}], "primary_metric", "guardrail_metrics", "seed", "description"}``: a new
  version of the definition (``ExperimentSet``). Once started, the allocation (surface,
  seed, variants with their weights and params) is frozen: changing it answers 409.
* ``POST /v1/admin/experiments/{key}/start`` and ``/stop`` (``{"reason": ...}``
  optional): ``ExperimentStarted`` / ``ExperimentStopped``. A stopped experiment is
  final. One experiment runs per surface: starting a second one answers 409.
* ``GET /v1/admin/experiments`` (``limit``, ``cursor``, ``status``) and
  ``GET /v1/admin/experiments/{key}``.
* ``GET /v1/admin/experiments/{key}/results``: per variant counts and rates,
  comparisons with the control, SRM check, guardrail breaches (docs/experiments.md). A
  sample ratio mismatch stops a running experiment (once).

Commands answer 202 with the position (``X-Consistency-Token``) and ``"confirmed"``
once the projection applied them within ``consistency_wait_s``. **Who may:** reading
needs ``analytics:read`` (support, admin); writing ``experiments:write`` (admin:
experiments change what users are served).

**For the serving routes:** ``assign(ctx, user_id, surface)``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import HEADER as CONSISTENCY_HEADER
from api.consistency import wait_for_token, wait_until_covered
from api.context import AppContext, accepted, ctx
from api.errors import Problem
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param, read_json
from core.events import Event
from core.ids import utcnow
from core.topics import EXPERIMENTS
from domain.experiments.assignment import variant_index
from domain.experiments.definition import (
    DESCRIPTION_MAX,
    EXPERIMENT_KEY,
    METRICS,
    PARAMS_MAX_CHARS,
    SEED_MAX,
    STATUSES,
    SURFACE,
    DefinitionError,
    Variant,
    check_metrics,
    check_variants,
)
from domain.experiments.results import analyse
from projections.experiments import (
    Experiment,
    ExperimentsProjector,
    get_experiment,
    list_experiments,
    running_experiments,
    stored_version,
    variant_counts,
)
from streams.log import Position, partition_for

log = logging.getLogger("mgw.experiments")

PROJECTOR = ExperimentsProjector()
READ_SCOPE = "analytics:read"
WRITE_SCOPE = "experiments:write"
#: how long ``assign`` may wait for the experiments store before serving no experiment
ASSIGN_BUDGET_S = 0.05
#: how old the in-process set of running experiments may be
CACHE_TTL_S = 1.0
#: how long Redis remembers that a user's exposure was appended (the projection keeps
#: the first exposure forever; this only saves appending repeats)
EXPOSURE_MEMORY_S = 90 * 24 * 3600
#: how long a claim to append an exposure holds before the append confirms it
EXPOSURE_CLAIM_S = 60
SRM_STOP_REASON = "sample ratio mismatch"


@dataclass(frozen=True, slots=True)
class Assignment:
    """The variant a user is served: its ``params`` tell the serving code what to do."""

    experiment: str
    variant: str
    params: dict[str, Any]


# -- background work: exposures are appended after the response ----------------------

_BACKGROUND: set[asyncio.Task[Any]] = set()


def _finished(task: asyncio.Task[Any]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("experiments background work failed: %r", exc, exc_info=exc)


def _spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` without waiting; keep a reference, and log its failure."""
    task = asyncio.create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_finished)
    return task


async def drain_background() -> None:
    """Wait for the exposures in flight (shutdown, tests)."""
    while _BACKGROUND:
        await asyncio.gather(*list(_BACKGROUND), return_exceptions=True)


# -- the running experiments, cached per process ----------------------------------------


@dataclass(slots=True)
class _Running:
    loaded_at: float = 0.0
    by_surface: dict[str, Experiment] | None = None
    loading: asyncio.Task[dict[str, Experiment]] | None = field(default=None)


# One entry per database pool (several apps can share a process, tests do).
_CACHE: weakref.WeakKeyDictionary[AsyncConnectionPool, _Running] = weakref.WeakKeyDictionary()


async def _load(pg: AsyncConnectionPool, entry: _Running) -> dict[str, Experiment]:
    try:
        started = time.monotonic()
        async with pg.connection() as conn:
            found = await running_experiments(conn)
        by_surface: dict[str, Experiment] = {}
        for exp in found:  # earliest started first: it serves its surface
            by_surface.setdefault(exp.surface, exp)
        entry.by_surface, entry.loaded_at = by_surface, started
        return by_surface
    finally:
        entry.loading = None


def _load_failed(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("loading the running experiments failed: %r", exc)


async def _running(pg: AsyncConnectionPool) -> dict[str, Experiment]:
    """Running experiments by surface, at most ``CACHE_TTL_S`` old; while a refresh
    runs, callers keep the previous answer. The load runs as its own task, so a caller
    that gives up waiting does not cancel it: the next call finds it done."""
    entry = _CACHE.get(pg)
    if entry is None:
        entry = _CACHE[pg] = _Running()
    fresh = time.monotonic() - entry.loaded_at < CACHE_TTL_S
    if entry.by_surface is not None and fresh:
        return entry.by_surface
    if entry.loading is None:
        entry.loading = asyncio.create_task(_load(pg, entry))
        entry.loading.add_done_callback(_load_failed)
    if entry.by_surface is not None:
        return entry.by_surface
    return await asyncio.shield(entry.loading)


def forget_running(pg: AsyncConnectionPool) -> None:
    """Drop this process's cached running set (after a start or stop it saw applied)."""
    _CACHE.pop(pg, None)


async def _expose(c: AppContext, exp: Experiment, variant: str, user_id: str) -> None:
    """Append the user's first exposure; Redis ``SET NX`` keeps repeats off the log."""
    redis = c.stores.redis
    memo = f"mgw:experiments:exposed:{exp.key}:{user_id}"
    if redis is not None:
        try:
            # a short claim first, made long once the event is on the log: a process
            # that dies in between leaves a claim that expires, not a lost exposure
            if not await redis.set(memo, variant, nx=True, ex=EXPOSURE_CLAIM_S):
                return  # appended (or being appended): the projection keeps the first
        except Exception as exc:  # dedupe is an optimisation; the projection keeps one
            log.warning("exposure dedupe unavailable (Redis), appending anyway: %r", exc)
            redis = None
    now = utcnow()
    event = Event(
        "ExperimentExposed",
        user_id,
        {
            "experiment": exp.key,
            "user_id": user_id,
            "variant": variant,
            "version": exp.version,
            "surface": exp.surface,
            "at": now,
        },
        occurred_at=now,
        producer="api",
    )
    try:
        await c.publisher.publish(event)
    except BaseException:
        if redis is not None:  # not appended: let the next serve try again
            try:
                await redis.delete(memo)
            except Exception as exc:
                log.warning("could not forget exposure memo %s: %r", memo, exc)
        raise
    if redis is not None:
        try:
            await redis.expire(memo, EXPOSURE_MEMORY_S)
        except Exception as exc:  # the claim expires; a later serve appends a repeat
            log.warning("could not keep exposure memo %s: %r", memo, exc)


async def assign(ctx: AppContext, user_id: str, surface: str) -> Assignment | None:
    """The variant of the experiment running on ``surface`` that ``user_id`` is served,
    or None when none runs there. Deterministic (GrowthBook hashing v2 of the
    experiment's seed and the user id). The first serve per (user, experiment) appends
    ``ExperimentExposed`` in the background. Never raises for a slow or failing
    experiments store: after ``ASSIGN_BUDGET_S`` it logs and answers None."""
    try:
        running = await asyncio.wait_for(_running(ctx.stores.pg), ASSIGN_BUDGET_S)
    except TimeoutError:
        log.warning(
            "experiments store slower than %.0f ms: %s served without an experiment",
            ASSIGN_BUDGET_S * 1000,
            surface,
        )
        return None
    except Exception as exc:
        log.warning("experiments store failed, %s served without an experiment: %r", surface, exc)
        return None
    exp = running.get(surface)
    if exp is None:
        return None
    chosen = exp.variants[variant_index(exp.seed, user_id, [v.weight for v in exp.variants])]
    _spawn(_expose(ctx, exp, chosen.name, user_id))
    return Assignment(exp.key, chosen.name, dict(chosen.params))


# -- commands -----------------------------------------------------------------------


class _VariantIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    weight: int
    params: dict[str, Any] = Field(default_factory=dict)


class _ExperimentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    surface: str
    variants: list[_VariantIn]
    primary_metric: str
    guardrail_metrics: list[str] = Field(default_factory=list)
    seed: str | None = None
    description: str = Field(default="", max_length=DESCRIPTION_MAX)


class _StopIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="stopped by an admin", min_length=1, max_length=200)


def _key(request: Request) -> str:
    key: str = request.path_params["key"]
    if not EXPERIMENT_KEY.match(key):
        raise Problem(
            422,
            "experiment keys are 1-64 characters of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit",
            field="key",
        )
    return key


def _no_nul(value: str, where: str) -> None:
    if "\x00" in value:
        raise Problem(422, f"{where}: must not contain NUL characters", field=where)


def _definition(body: _ExperimentIn, key: str) -> tuple[list[Variant], str]:
    if not SURFACE.match(body.surface):
        raise Problem(422, "surface: 1-64 characters of a-z, 0-9, '_' and '-'", field="surface")
    variants = [Variant(v.name, v.weight, v.params) for v in body.variants]
    seed = key if body.seed is None else body.seed
    try:
        check_variants(variants)
        check_metrics(body.primary_metric, body.guardrail_metrics)
    except DefinitionError as exc:
        raise Problem(422, f"{exc.field}: {exc}", field=exc.field) from None
    for i, v in enumerate(variants):
        if len(json.dumps(v.params)) > PARAMS_MAX_CHARS:
            where = f"variants.{i}.params"
            raise Problem(
                422, f"{where}: at most {PARAMS_MAX_CHARS} characters of JSON", field=where
            )
        _no_nul(json.dumps(v.params, ensure_ascii=False), f"variants.{i}.params")
    if not 0 < len(seed) <= SEED_MAX:
        raise Problem(422, f"seed: 1 to {SEED_MAX} characters", field="seed")
    _no_nul(seed, "seed")
    _no_nul(body.description, "description")
    return variants, seed


def _allocation(surface: str, seed: str, variants: list[Variant]) -> tuple[Any, ...]:
    return (
        surface,
        seed,
        tuple((v.name, v.weight, json.dumps(dict(v.params), sort_keys=True)) for v in variants),
    )


async def _applied(c: AppContext, pos: Position) -> bool:
    return await wait_until_covered(
        c.stores.pg, [PROJECTOR.name], pos, c.settings.consistency_wait_s
    )


async def _catch_up(c: AppContext, key: str) -> None:
    """Wait until every event of ``key``'s partition appended so far is applied."""
    partition = partition_for(key.encode(), EXPERIMENTS.partitions)
    end = (await c.log.end_offsets(EXPERIMENTS.name)).get(partition, 0)
    if end > 0 and not await _applied(c, Position(EXPERIMENTS.name, partition, end - 1)):
        wait_s = c.settings.consistency_wait_s
        raise Problem(
            503,
            f"the experiments projection has not caught up within {wait_s:g}s; retry",
            field=CONSISTENCY_HEADER,
            headers={"Retry-After": "1"},
        )


async def _current(c: AppContext, key: str) -> Experiment | None:
    async with c.stores.pg.connection() as conn:
        return await get_experiment(conn, key)


def _event(request: Request, event_type: str, key: str, payload: dict[str, Any]) -> Event:
    return Event(
        event_type,
        key,
        payload,
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )


async def put_experiment(request: Request) -> Response:
    admin = await require(request, WRITE_SCOPE)
    c = ctx(request)
    key = _key(request)
    body: _ExperimentIn = await read_json(request, _ExperimentIn)
    variants, seed = _definition(body, key)
    await _catch_up(c, key)
    found = await _current(c, key)
    if found is not None and found.status != "draft":
        before = _allocation(found.surface, found.seed, found.variants)
        if before != _allocation(body.surface, seed, variants):
            raise Problem(
                409,
                f"experiment {key!r} is {found.status}: its surface, seed and variants"
                " (names, weights, params) cannot change; define a new experiment",
                field="variants",
            )
    version = (found.version if found else 0) + 1
    event = _event(
        request,
        "ExperimentSet",
        key,
        {
            "key": key,
            "version": version,
            "surface": body.surface,
            "variants": [
                {"name": v.name, "weight": v.weight, "params": json.dumps(dict(v.params))}
                for v in variants
            ],
            "primary_metric": body.primary_metric,
            "guardrail_metrics": list(body.guardrail_metrics),
            "seed": seed,
            "description": body.description,
            "set_by": admin.user_id,
        },
    )
    pos = await c.publisher.publish(event)
    confirmed = await _applied(c, pos)
    stored: Experiment | None = None
    if confirmed:
        async with c.stores.pg.connection() as conn:
            winner = await stored_version(conn, key, version)
            stored = await get_experiment(conn, key)
        if winner != event.event_id:
            raise Problem(
                409,
                f"version {version} of {key!r} was not stored: a concurrent request changed"
                " the experiment first; read it and send the change again",
                field="key",
            )
        forget_running(c.stores.pg)
    out = stored.as_dict() if stored else {"key": key, "version": version}
    return accepted(pos, **out, confirmed=confirmed)


async def start_experiment(request: Request) -> Response:
    admin = await require(request, WRITE_SCOPE)
    c = ctx(request)
    key = _key(request)
    await _catch_up(c, key)
    found = await _current(c, key)
    if found is None:
        raise Problem(404, f"no experiment {key!r}", field="key")
    if found.status != "draft":
        raise Problem(
            409, f"experiment {key!r} is {found.status}; only a draft can start", field="key"
        )
    async with c.stores.pg.connection() as conn:
        running = await running_experiments(conn)
    busy = [e.key for e in running if e.surface == found.surface]
    if busy:
        raise Problem(
            409,
            f"experiment {busy[0]!r} already runs on surface {found.surface!r}; stop it first",
            field="surface",
        )
    payload = {"key": key, "version": found.version, "started_by": admin.user_id}
    pos = await c.publisher.publish(_event(request, "ExperimentStarted", key, payload))
    confirmed = await _applied(c, pos)
    if confirmed:
        forget_running(c.stores.pg)
    return accepted(pos, key=key, status="running", confirmed=confirmed)


async def _stop(
    c: AppContext, request: Request | None, key: str, reason: str, by: str | None
) -> tuple[Position, bool]:
    payload = {"key": key, "reason": reason, "stopped_by": by}
    event = (
        _event(request, "ExperimentStopped", key, payload)
        if request is not None
        else Event("ExperimentStopped", key, payload, producer="api")
    )
    pos = await c.publisher.publish(event)
    confirmed = await _applied(c, pos)
    if confirmed:
        forget_running(c.stores.pg)
    return pos, confirmed


async def stop_experiment(request: Request) -> Response:
    admin = await require(request, WRITE_SCOPE)
    c = ctx(request)
    key = _key(request)
    body: _StopIn = await read_json(request, _StopIn, optional=True)
    _no_nul(body.reason, "reason")
    await _catch_up(c, key)
    found = await _current(c, key)
    if found is None:
        raise Problem(404, f"no experiment {key!r}", field="key")
    if found.status == "stopped":
        raise Problem(409, f"experiment {key!r} is already stopped", field="key")
    pos, confirmed = await _stop(c, request, key, body.reason, admin.user_id)
    return accepted(pos, key=key, status="stopped", reason=body.reason, confirmed=confirmed)


# -- queries ------------------------------------------------------------------------


async def get_experiments(request: Request) -> Response:
    await require(request, READ_SCOPE)
    c = ctx(request)
    limit = int_param(request, "limit", 20, 1, 100)
    raw = request.query_params.get("cursor")
    after = decode_cursor(raw, (str,))[0] if raw else None
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise Problem(422, f"status must be one of {', '.join(STATUSES)}", field="status")
    await wait_for_token(request, c.stores.pg, [PROJECTOR], c.settings.consistency_wait_s)
    async with c.stores.pg.connection() as conn:
        found = await list_experiments(conn, limit=limit + 1, after=after, status=status)
    page, more = found[:limit], len(found) > limit
    return JSONResponse(
        {
            "items": [e.as_dict() for e in page],
            "next_cursor": encode_cursor([page[-1].key]) if more else None,
        }
    )


async def get_one(request: Request) -> Response:
    await require(request, READ_SCOPE)
    c = ctx(request)
    key = _key(request)
    await wait_for_token(request, c.stores.pg, [PROJECTOR], c.settings.consistency_wait_s)
    found = await _current(c, key)
    if found is None:
        raise Problem(404, f"no experiment {key!r}", field="key")
    return JSONResponse(found.as_dict())


async def _srm_stop_once(c: AppContext, key: str) -> tuple[Position, bool] | None:
    """Stop ``key`` for a sample ratio mismatch unless this was done already (a Redis
    claim keeps concurrent readers from appending it twice; the projector ignores a
    stop of a stopped experiment should two get through)."""
    if c.stores.redis is not None:
        try:
            claim = f"mgw:experiments:srm-stop:{key}"
            if not await c.stores.redis.set(claim, b"1", nx=True, ex=60):
                return None
        except Exception as exc:
            log.warning("SRM stop claim unavailable (Redis), stopping anyway: %r", exc)
    log.warning("experiment %s stopped: sample ratio mismatch", key)
    return await _stop(c, None, key, SRM_STOP_REASON, None)


async def get_results(request: Request) -> Response:
    await require(request, READ_SCOPE)
    c = ctx(request)
    key = _key(request)
    await wait_for_token(request, c.stores.pg, [PROJECTOR], c.settings.consistency_wait_s)
    async with c.stores.pg.connection() as conn:
        found = await get_experiment(conn, key)
        if found is None:
            raise Problem(404, f"no experiment {key!r}", field="key")
        counts = await variant_counts(conn, found)
    results = analyse(
        counts,
        primary_metric=found.primary_metric,
        guardrail_metrics=[m for m in found.guardrail_metrics if m in METRICS],
    )
    headers: dict[str, str] = {}
    status, stop_reason = found.status, found.stop_reason
    stopped_now = False
    if results["srm"] and found.status == "running":
        done = await _srm_stop_once(c, key)
        if done is not None:
            pos, _ = done
            headers[CONSISTENCY_HEADER] = pos.token()
            status, stop_reason, stopped_now = "stopped", SRM_STOP_REASON, True
    return JSONResponse(
        {
            "key": key,
            "status": status,
            "stop_reason": stop_reason,
            "stopped_now": stopped_now,
            "surface": found.surface,
            "version": found.version,
            **results,
        },
        headers=headers,
    )


routes: list[Route] = [
    Route("/v1/admin/experiments", get_experiments, methods=["GET"]),
    Route("/v1/admin/experiments/{key}", get_one, methods=["GET"]),
    Route("/v1/admin/experiments/{key}", put_experiment, methods=["PUT"]),
    Route("/v1/admin/experiments/{key}/start", start_experiment, methods=["POST"]),
    Route("/v1/admin/experiments/{key}/stop", stop_experiment, methods=["POST"]),
    Route("/v1/admin/experiments/{key}/results", get_results, methods=["GET"]),
]
