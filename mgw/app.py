"""The API with everything behind it: the composition root's side of the application.

``api.app.build_app`` knows routes, middleware and error handlers. This module opens the
platform (log, stores, vector store), the identity services, and, unless workers do it,
runs the projectors, their background steps and the shard processes, for as long as the
application lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette

from api.app import build_app
from api.context import AppContext
from api.identity import bootstrap
from api.identity.services import IdentityServices
from api.realtime_hub import Hub
from core.mail import mailer_from_settings
from core.settings import Settings
from domain.realtime import CLOSE_GOING_AWAY
from mgw.platform import open_platform, search_engine, start_background, stop_background
from mgw.worker import ShardSupervisor, lanes, shardable
from projections.recs_engine import RecsEngine
from projections.registry import PROJECTORS
from streams.runner import EmbeddedRunner

log = logging.getLogger("mgw.api")


def create_app(
    settings: Settings,
    *,
    run_projectors: bool = True,
    with_vectors: bool = True,
    on_ready: Any = None,
    on_stop: Any = None,
    mailer: Any = None,
) -> Starlette:
    """``run_projectors`` runs the embedded runner inside this process (``mgw up``);
    leave it off when ``mgw worker`` processes do the projecting."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # a connection per lane slot (streams/runner.py: the extra lanes of all projectors
        # share lanes - 1 of them), so catching-up lanes never queue the API
        laned = lanes(settings) if run_projectors else {}
        pool_size = 16 + max(laned.values(), default=1) - 1
        async with open_platform(settings, with_vectors=with_vectors, pool_size=pool_size) as pf:
            context = AppContext(settings, pf.log, pf.stores, pf.publisher, where=pf.where)
            pf.stores.mailer = mailer if mailer is not None else mailer_from_settings(settings)
            context.identity = await IdentityServices.open(
                settings, pf.stores.pg, pf.stores.redis, pf.stores.mailer
            )
            stop = asyncio.Event()
            revocations = asyncio.create_task(
                context.identity.maintain(stop), name="identity-maintenance"
            )
            task = None
            background: list[asyncio.Task[None]] = []
            shards = None
            try:
                if run_projectors:
                    n = settings.projector_processes
                    sharded = shardable(settings, PROJECTORS) if n > 1 else []
                    runner = EmbeddedRunner(
                        pf.log,
                        pf.stores,
                        PROJECTORS,
                        batch_size=settings.batch_size,
                        linger_ms=settings.batch_linger_ms,
                        shards={p.name: (0, n) for p in sharded},
                        lanes=laned,
                    )
                    await runner.prepare()
                    if sharded:
                        assert pf.resolved is not None
                        shards = ShardSupervisor(pf.resolved, [p.name for p in sharded], n)
                        shards.start()
                        context.shards = shards
                    context.runner = runner
                    task = asyncio.create_task(runner.run(stop), name="embedded-runner")
                    background = start_background(PROJECTORS, pf.stores, stop)
                context.search = search_engine(settings, pf.stores)
                context.recs = RecsEngine(pf.stores.pg, settings.recs_path)
                background.append(asyncio.create_task(context.recs.run(stop), name="recs-engine"))
                hub = context.realtime = Hub(
                    pf.stores.redis, pf.stores.pg, pf.publisher, context.identity.revocations
                )
                background.append(asyncio.create_task(hub.run(stop), name="realtime-hub"))
                background.append(
                    asyncio.create_task(hub.watch_tokens(stop), name="realtime-tokens")
                )
                app.state.mgw = context
                if run_projectors:
                    await bootstrap.bootstrap_admin(context)
                else:  # workers elsewhere decide: do not hold the start up for them
                    context.identity.spawn(bootstrap.bootstrap_admin_when_ready(context, stop))
                if on_ready is not None:
                    await on_ready(context)
                # what start-up loaded (modules, models, vocabularies) lives as long as the
                # process: frozen out of the collector's sight, a full collection stays short
                # instead of pausing requests for tens of milliseconds
                gc.collect()
                gc.freeze()
                yield
            finally:
                if on_stop is not None:
                    await on_stop()
                if context.realtime is not None:
                    # devices reconnect (to another process) with their cursors
                    context.realtime.close_all(CLOSE_GOING_AWAY, "server shutting down")
                    await context.realtime.drain()
                if shards is not None:
                    await shards.stop()
                stop.set()
                await asyncio.wait_for(revocations, 5)
                # mail still being sent gets a moment; nothing may outlive the pools
                pending = list(context.identity.background)
                if pending:
                    _, late = await asyncio.wait(pending, timeout=5)
                    for t in late:
                        t.cancel()
                    await asyncio.gather(*late, return_exceptions=True)
                await stop_background(background)
                if task is not None:
                    try:
                        await asyncio.wait_for(task, 10)
                    except (TimeoutError, asyncio.CancelledError):
                        task.cancel()

    return build_app(settings, lifespan=lifespan)
