"""Read-your-writes: a query carrying a consistency token waits for it.

A command answers with the position of the event it appended. A query may send
it back in ``X-Consistency-Token``; the route then waits (at most
``consistency_wait_s``) until every projection it reads from, among those that
read the token's topic, has a watermark past that position.

``wait_until_covered`` is the one poll loop behind it, also used by the commands that
wait for their own event (ranking profiles, rate limit rules, identity decisions).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request

from api.errors import Problem
from core.backoff import Backoff
from core.metrics import CONSISTENCY_WAITS
from core.topics import spec
from projections.base import Projector
from streams.log import InvalidToken, Position

HEADER = "X-Consistency-Token"
#: how often a wait asks: 2 ms doubling to 50 ms (no jitter: one request, not a herd)
POLL = Backoff(first=0.002, cap=0.05, jitter=False)


async def covered(pg: AsyncConnectionPool, projectors: Sequence[str], pos: Position) -> bool:
    async with pg.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM projection_watermarks WHERE projector = ANY(%s)"
            " AND topic = %s AND partition = %s AND next_offset > %s",
            (list(projectors), pos.topic, pos.partition, pos.offset),
        )
        row = await cur.fetchone()
    return row is not None and row[0] == len(projectors)


async def wait_until_covered(
    pg: AsyncConnectionPool,
    projectors: Sequence[str],
    pos: Position,
    timeout: float,
    *,
    poll: Backoff = POLL,
) -> bool:
    """True once each of ``projectors`` has a watermark past ``pos``; False when that
    has not happened within ``timeout`` seconds (asked at least once either way)."""
    started = time.monotonic()
    attempt = 0
    while not await covered(pg, projectors, pos):
        if time.monotonic() - started >= timeout:
            return False
        await asyncio.sleep(poll.delay(attempt))
        attempt += 1
    return True


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
    done = await wait_until_covered(pg, names, pos, timeout)
    CONSISTENCY_WAITS.observe(time.monotonic() - started)
    if not done:
        raise Problem(
            503,
            f"the projection has not caught up with {token} within {timeout:g}s; retry",
            field=HEADER,
            headers={"Retry-After": "1"},
        )
