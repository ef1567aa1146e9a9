"""Liveness, readiness (dependencies and projector lag) and Prometheus metrics.

``/ready`` asks every dependency at once, each for at most ``CHECK_TIMEOUT_S``, so a
database that crashed is reported within a few seconds (503 with ``Retry-After``)
instead of holding the probe for as long as a connection pool would wait.

``/metrics`` runs the same checks before it answers, so ``mgw_dependency_up`` and the
projector lag gauges are as fresh as the scrape even where nothing probes ``/ready``
and the projectors run in other processes (Kafka workers, shards).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import ctx
from api.responses import Body, respond
from core.metrics import DEPENDENCY_UP, PROJECTOR_LAG, PROJECTOR_LAG_SECONDS
from projections.registry import PROJECTORS
from streams.log import LogError
from streams.runner import oldest_age


class Alive(Body):
    status: Literal["ok"]


class Dependency(Body):
    status: Literal["up", "down"]
    error: str | None = None


class ProjectorLag(Body):
    lag: int = Field(description="records appended and not yet applied")


class LagUnknown(Body):
    error: str


class Readiness(Body):
    """``ready`` (200), or ``unavailable`` or ``starting`` (503 with the same body)."""

    status: Literal["ready", "unavailable", "starting"]
    dependencies: dict[str, Dependency]
    log_backend: str
    projectors: dict[str, ProjectorLag] | LagUnknown
    stopped_projectors: dict[str, str] | None = None
    starting: list[str] | None = None


async def health(request: Request) -> Response:
    return respond(Alive, {"status": "ok"})


#: how long one readiness check may take; they run concurrently
CHECK_TIMEOUT_S = 2.0
#: what a 503 from /ready asks a prober to wait before asking again
RETRY_AFTER_S = 5


async def _check(coro: Any) -> dict[str, Any]:
    try:
        await asyncio.wait_for(coro, CHECK_TIMEOUT_S)
        return {"status": "up"}
    except TimeoutError as exc:
        reason = str(exc) or f"no answer within {CHECK_TIMEOUT_S:g}s"
        return {"status": "down", "error": f"TimeoutError: {reason}"}
    except Exception as exc:
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}


async def _pg_ping(c: Any) -> None:
    # the pool gives up first, so a database that is away says so rather than "timeout"
    async with c.stores.pg.connection(timeout=CHECK_TIMEOUT_S * 0.9) as conn:
        await conn.execute("SELECT 1")


async def projector_lag(c: Any) -> dict[str, Any]:
    async with c.stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT projector, topic, partition, next_offset FROM projection_watermarks"
        )
        marks = {(p, t, n): o for p, t, n, o in await cur.fetchall()}
    out: dict[str, Any] = {}
    ends_by_topic = {}
    behind: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for proj in PROJECTORS:
        lag = 0
        for topic in proj.topics:
            if topic not in ends_by_topic:
                ends_by_topic[topic] = await c.log.end_offsets(topic)
            t_lag = sum(
                max(0, end - marks.get((proj.name, topic, p), 0))
                for p, end in ends_by_topic[topic].items()
            )
            PROJECTOR_LAG.labels(proj.name, topic).set(t_lag)
            lag += t_lag
            behind[(proj.name, topic)] = [
                (p, marks.get((proj.name, topic, p), 0))
                for p, end in ends_by_topic[topic].items()
                if end > marks.get((proj.name, topic, p), 0)
            ]
        out[proj.name] = {"lag": lag}
    await _lag_seconds(c, behind)
    return out


async def _lag_seconds(c: Any, behind: dict[tuple[str, str], list[tuple[int, int]]]) -> None:
    """mgw_projector_lag_seconds from the watermarks: one record read per partition
    behind, all at once. Best effort within half the check time: a gauge the reads did
    not reach keeps its last value (the lag in records above is what /ready reports)."""
    keys = list(behind)
    try:
        ages = await asyncio.wait_for(
            asyncio.gather(*(oldest_age(c.log, topic, behind[(p, topic)]) for p, topic in keys)),
            CHECK_TIMEOUT_S / 2,
        )
    except (TimeoutError, LogError):
        return
    for (projector, topic), age in zip(keys, ages, strict=True):
        if age is not None:
            PROJECTOR_LAG_SECONDS.labels(projector, topic).set(age)


async def _lag(c: Any) -> dict[str, Any]:
    try:
        return await asyncio.wait_for(projector_lag(c), CHECK_TIMEOUT_S + 0.5)
    except TimeoutError:
        return {"error": f"TimeoutError: no answer within {CHECK_TIMEOUT_S + 0.5:g}s"}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def _probe(c: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every dependency and the projectors' lag, at once (sets their gauges)."""
    checks: dict[str, Any] = {"postgres": _pg_ping(c)}
    if c.stores.redis is not None:
        checks["redis"] = c.stores.redis.ping()
    if c.stores.qdrant is not None:
        checks["qdrant"] = c.stores.qdrant.get_collections()
    checks["log"] = c.log.end_offsets(PROJECTORS[0].topics[0])
    *results, projectors = await asyncio.gather(*map(_check, checks.values()), _lag(c))
    deps = dict(zip(checks, results, strict=True))
    for name, d in deps.items():
        DEPENDENCY_UP.labels(name).set(1 if d["status"] == "up" else 0)
    return deps, projectors


async def ready(request: Request) -> Response:
    c = ctx(request)
    deps, projectors = await _probe(c)
    body: dict[str, Any] = {
        "dependencies": deps,
        "log_backend": c.log.backend,
        "projectors": projectors,
    }
    # projector loops of this process that stopped on an error retrying would not fix
    stopped = c.runner.stopped() if hasattr(c.runner, "stopped") else {}
    if stopped:
        body["stopped_projectors"] = stopped
    up = all(d["status"] == "up" for d in deps.values())
    body["status"] = "ready" if up else "unavailable"
    # shard processes still starting cannot answer a read-your-writes wait on their
    # partitions yet
    starting = c.shards.starting() if c.shards is not None else []
    if starting:
        body["starting"] = starting
        if up:
            body["status"] = "starting"
            up = False
    if up:
        return respond(Readiness, body)
    return respond(Readiness, body, 503, headers={"Retry-After": str(RETRY_AFTER_S)})


async def metrics(request: Request) -> Response:
    await _probe(ctx(request))
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
