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

**For the serving routes:** ``assign`` in api/experiment_assignment.py.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import HEADER as CONSISTENCY_HEADER
from api.consistency import wait_for_token, wait_until_covered
from api.context import AppContext, accepted, ctx
from api.errors import Problem
from api.experiment_assignment import forget_running
from api.pagination import decode_cursor, encode_cursor
from api.requests import int_param, read_json
from core.events import Event
from core.topics import EXPERIMENTS
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
SRM_STOP_REASON = "sample ratio mismatch"


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
