"""Read-your-writes: a query carrying a consistency token waits for it.

A command answers with the position of the event it appended. A query may send
it back in ``X-Consistency-Token``; the route then waits (at most
``consistency_wait_s``) until every projection it reads from, among those that
read the token's topic, has a watermark past that position.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from api.errors import Problem
from core.metrics import CONSISTENCY_WAITS
from core.topics import spec
from projections.base import Projector
from streams.log import InvalidToken, Position

HEADER = "X-Consistency-Token"


async def covered(pg: AsyncConnectionPool, projectors: Sequence[str], pos: Position) -> bool:
    async with pg.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM projection_watermarks WHERE projector = ANY(%s)"
            " AND topic = %s AND partition = %s AND next_offset > %s",
            (list(projectors), pos.topic, pos.partition, pos.offset),
        )
        row = await cur.fetchone()
    return row is not None and row[0] == len(projectors)


async def wait_for_token(
    request: Request, pg: AsyncConnectionPool, reads: Sequence[Projector], timeout: float
) -> None:
    token = request.headers.get(HEADER) or request.query_params.get("consistency_token")
    if not token:
        return
    try:
        pos = Position.parse(token)
    except InvalidToken as exc:
        raise Problem(400, f"malformed consistency token: {exc}", field=HEADER) from None
    names = [p.name for p in reads if pos.topic in p.topics]
    if not names:
        raise Problem(400, f"this resource does not read topic {pos.topic!r}", field=HEADER)
    if pos.partition >= spec(pos.topic).partitions:
        # no such partition: waiting could never succeed, so do not ask to retry
        raise Problem(400, f"topic {pos.topic!r} has no partition {pos.partition}", field=HEADER)
    started = time.monotonic()
    delay = 0.002
    while True:
        if await covered(pg, names, pos):
            CONSISTENCY_WAITS.observe(time.monotonic() - started)
            return
        if time.monotonic() - started >= timeout:
            CONSISTENCY_WAITS.observe(time.monotonic() - started)
            raise Problem(
                503,
                f"the projection has not caught up with {token} within {timeout:g}s; retry",
                field=HEADER,
                headers={"Retry-After": "1"},
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.05)
