"""The floor for bench/write_path.py: the simplest app that could take a playback report.

A bare Starlette app on the same uvicorn as `mgw up`: it parses the same JSON body,
checks the same fields are there, and INSERTs one row per request into the same
PostgreSQL with one commit per request, then answers 202. No auth, no log, no
projection: what is left when everything the product adds is taken away.

    WRITE_FLOOR_DSN=postgresql://... uvicorn bench.write_floor:app --port 8001
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

POOL_SIZE = int(os.environ.get("WRITE_FLOOR_POOL", "8"))
FIELDS = ("content_id", "device_id", "kind", "position_s")

pool = AsyncConnectionPool(
    os.environ.get("WRITE_FLOOR_DSN", ""),
    min_size=POOL_SIZE,
    max_size=POOL_SIZE,
    open=False,
    kwargs={"autocommit": True},  # one commit per INSERT
)


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    await pool.open(wait=True)
    async with pool.connection() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS floor_playback (id bigserial PRIMARY KEY,"
            " user_id text, content_id text, device_id text, kind text,"
            " position_s float8, duration_s float8, at timestamptz DEFAULT now())"
        )
    yield
    await pool.close()


async def post(request: Request) -> JSONResponse:
    try:
        body = json.loads(await request.body())
    except ValueError:
        return JSONResponse({"error": "body is not JSON"}, status_code=400)
    missing = [f for f in FIELDS if f not in body]
    if missing:
        return JSONResponse({"error": f"{missing[0]} is required"}, status_code=422)
    user = request.headers.get("authorization", "")[-32:]
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO floor_playback (user_id, content_id, device_id, kind, position_s,"
            " duration_s) VALUES (%s, %s, %s, %s, %s, %s)",
            (
                user,
                body["content_id"],
                body["device_id"],
                body["kind"],
                body["position_s"],
                body.get("duration_s"),
            ),  # fmt: skip
        )
    return JSONResponse({"accepted": True}, status_code=202)


app = Starlette(routes=[Route("/v1/playback/events", post, methods=["POST"])], lifespan=lifespan)
