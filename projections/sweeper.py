"""A background step that appends what a periodic query decides: the expiries a clock
makes due (streaming sessions that stopped beating, commands nobody acknowledged).

The decision is an event like any other, so a replay folds the same expiries without
asking the clock again. A sweep repeated before its events are folded appends them once
more; their ids are derived from what expired, and the projector ignores the repeat.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.backoff import pause
from core.events import Event

log = logging.getLogger("mgw.sweeper")


class Sweeper:
    #: what the log says when a sweep fails
    what = "sweep"

    def __init__(self, pool: AsyncConnectionPool, publisher: Any, every_s: float = 1.0) -> None:
        self.pool = pool
        self.publisher = publisher
        self.every_s = every_s

    async def due(self, conn: AsyncConnection[Any]) -> list[Event]:
        """The events the clock has made due now."""
        raise NotImplementedError

    async def sweep(self) -> int:
        async with self.pool.connection() as conn:
            events = await self.due(conn)
        if events:
            await self.publisher.publish_many(events)
        return len(events)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.sweep()
            except Exception as exc:  # the next sweep finds the same rows
                log.warning("%s failed (%r); retrying", self.what, exc)
            await pause(self.every_s, stop)
