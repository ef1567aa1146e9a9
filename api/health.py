"""Liveness, readiness (dependencies and projector lag) and Prometheus metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.context import ctx
from core.metrics import PROJECTOR_LAG
from projections.registry import PROJECTORS


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _check(coro: Any) -> dict[str, Any]:
    try:
        await asyncio.wait_for(coro, 2.0)
        return {"status": "up"}
    except Exception as exc:
        return {"status": "down", "error": f"{type(exc).__name__}: {exc}"}


async def _pg_ping(c: Any) -> None:
    async with c.stores.pg.connection() as conn:
        await conn.execute("SELECT 1")


async def projector_lag(c: Any) -> dict[str, Any]:
    async with c.stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT projector, topic, partition, next_offset FROM projection_watermarks"
        )
        marks = {(p, t, n): o for p, t, n, o in await cur.fetchall()}
    out: dict[str, Any] = {}
    ends_by_topic = {}
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
        out[proj.name] = {"lag": lag}
    return out


async def ready(request: Request) -> Response:
    c = ctx(request)
    deps: dict[str, Any] = {"postgres": await _check(_pg_ping(c))}
    if c.stores.redis is not None:
        deps["redis"] = await _check(c.stores.redis.ping())
    if c.stores.qdrant is not None:
        deps["qdrant"] = await _check(c.stores.qdrant.get_collections())
    deps["log"] = await _check(c.log.end_offsets(PROJECTORS[0].topics[0]))
    body: dict[str, Any] = {"dependencies": deps, "log_backend": c.log.backend}
    try:
        body["projectors"] = await asyncio.wait_for(projector_lag(c), 3.0)
    except Exception as exc:
        body["projectors"] = {"error": f"{type(exc).__name__}: {exc}"}
    up = all(d["status"] == "up" for d in deps.values())
    body["status"] = "ready" if up else "unavailable"
    return JSONResponse(body, status_code=200 if up else 503)


async def metrics(request: Request) -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/ready", ready, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
