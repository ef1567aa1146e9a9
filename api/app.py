"""The Starlette application, composed, with its connections opened in the lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import Route

from api import (
    accounts,
    admin_ratelimits,
    admin_users,
    api_keys,
    authorize,
    bootstrap,
    catalog,
    content,
    device,
    external,
    health,
    mfa,
    oauth,
    pages,
    playback,
    profiles,
    ranking,
    search,
    search_analytics,
    sessions,
    webhooks,
)
from api.context import AppContext
from api.errors import (
    Problem,
    encode_error_handler,
    http_exception_handler,
    problem_handler,
    unhandled_handler,
)
from api.identity import IdentityServices
from api.limits import BodySizeLimit
from api.ratelimit import RateLimitHeaders
from core.codec import EncodeError
from core.mail import mailer_from_settings
from core.settings import Settings

log = logging.getLogger("mgw.api")


def create_app(
    settings: Settings,
    *,
    run_projectors: bool = True,
    with_qdrant: bool = True,
    on_ready: Any = None,
    on_stop: Any = None,
    mailer: Any = None,
) -> Starlette:
    """``run_projectors`` runs the embedded runner inside this process (``mgw up``);
    leave it off when ``mgw worker`` processes do the projecting."""
    # Imported here: the composition root may import everything, the routes may not.
    from mgw.platform import open_platform, search_runtime
    from mgw.worker import ShardSupervisor, shardable
    from projections.registry import PROJECTORS
    from streams.runner import EmbeddedRunner

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_platform(settings, with_qdrant=with_qdrant, pool_size=16) as pf:
            context = AppContext(settings, pf.log, pf.stores, pf.publisher, where=pf.where)
            context.identity = await IdentityServices.open(
                settings,
                pf.stores.pg,
                pf.stores.redis,
                mailer if mailer is not None else mailer_from_settings(settings),
            )
            stop = asyncio.Event()
            revocations = asyncio.create_task(
                context.identity.maintain(stop), name="identity-maintenance"
            )
            task = None
            index_task = None
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
                    )
                    await runner.prepare()
                    if sharded:
                        assert pf.resolved is not None
                        shards = ShardSupervisor(pf.resolved, [p.name for p in sharded], n)
                        shards.start()
                    context.runner = runner
                    task = asyncio.create_task(runner.run(stop), name="embedded-runner")
                context.search, indexer = search_runtime(settings, pf.stores)
                if indexer is not None:
                    index_task = asyncio.create_task(indexer.run(stop), name="search-indexer")
                app.state.mgw = context
                if run_projectors:
                    await bootstrap.bootstrap_admin(context)
                else:  # workers elsewhere decide: do not hold the start up for them
                    context.identity.spawn(bootstrap.bootstrap_admin_when_ready(context, stop))
                if on_ready is not None:
                    await on_ready(context)
                yield
            finally:
                if on_stop is not None:
                    await on_stop()
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
                if index_task is not None:
                    try:
                        await asyncio.wait_for(index_task, 10)
                    except (TimeoutError, asyncio.CancelledError):
                        index_task.cancel()
                if task is not None:
                    try:
                        await asyncio.wait_for(task, 10)
                    except (TimeoutError, asyncio.CancelledError):
                        task.cancel()

    routes: list[Route] = [
        *health.routes,
        *content.routes,
        *catalog.routes,
        *webhooks.routes,
        *playback.routes,
        *search.routes,
        *ranking.routes,
        *search_analytics.routes,
        *oauth.routes,
        *authorize.routes,
        *device.routes,
        *accounts.routes,
        *sessions.routes,
        *mfa.routes,
        *api_keys.routes,
        *external.routes,
        *admin_users.routes,
        *admin_ratelimits.routes,
        *profiles.routes,
        *pages.routes,
    ]
    return Starlette(
        routes=routes,
        middleware=[
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
            Middleware(RateLimitHeaders),
        ],
        exception_handlers={
            Problem: problem_handler,
            EncodeError: encode_error_handler,
            HTTPException: http_exception_handler,
            Exception: unhandled_handler,
        },
        lifespan=lifespan,
    )
