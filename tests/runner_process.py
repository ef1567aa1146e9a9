"""A runner in its own OS process, for tests that kill it mid-stream.

usage: python -m tests.runner_process DB_URI REDIS_URL BATCH_SIZE PROJECTOR...
(RUNNER_LANES in the environment: lanes per projector, default 1)
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import redis.asyncio as aioredis

from core.db import open_pool
from projections.base import Stores
from projections.registry import by_name
from streams.embedded import EmbeddedLog
from streams.runner import EmbeddedRunner


async def main(db_uri: str, redis_url: str, batch_size: int, names: list[str]) -> None:
    pool = open_pool(db_uri)
    await pool.open(wait=True)
    log = await EmbeddedLog(db_uri).open()
    stores = Stores(pg=pool, redis=aioredis.from_url(redis_url))
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    lanes = int(os.environ.get("RUNNER_LANES", "1"))
    runner = EmbeddedRunner(
        log,
        stores,
        [by_name(n) for n in names],
        batch_size=batch_size,
        linger_ms=0,
        lanes={n: lanes for n in names},
    )
    print("running", flush=True)
    await runner.run(stop)
    await log.close()
    await pool.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]))
