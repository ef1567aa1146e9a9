"""The Starlette application: routes, middleware and error handlers; nothing that runs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Route

from api import (
    activity,
    admin_console,
    admin_health,
    catalog,
    content,
    dead_letters,
    device_commands,
    docs_page,
    experiments,
    health,
    library,
    moderation,
    notifications,
    playback,
    playback_sessions,
    ranking,
    realtime,
    rebuilds,
    recommendations,
    search,
    search_analytics,
    sync,
    webhooks,
)
from api.errors import (
    Problem,
    encode_error_handler,
    http_exception_handler,
    problem_handler,
    transient_exceptions,
    transient_handler,
    unhandled_handler,
)
from api.http_cache import ConditionalGet
from api.http_metrics import HttpMetrics
from api.identity import (
    accounts,
    admin_ratelimits,
    admin_users,
    api_keys,
    authorize,
    device,
    devices,
    external,
    mfa,
    oauth,
    pages,
    profiles,
    sessions,
)
from api.limits import BodySizeLimit
from api.mcp import McpEndpoint
from api.mcp import routes as mcp_routes
from api.openapi import openapi_document
from api.ratelimit import RateLimitHeaders
from api.routing import IndexedRouter
from api.tracing import Traced
from core.codec import EncodeError
from core.settings import Settings

log = logging.getLogger("mgw.api")


def _cors(settings: Settings) -> list[Middleware]:
    """Browsers on the configured origins may call the API and read the headers it
    answers with (the consistency token, rate limits, ETag)."""
    if not settings.cors_origins:
        return []
    return [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "If-None-Match",
                "X-Consistency-Token",
                "X-Device-Id",
                "X-Profile-Id",
                "X-Request-Id",
            ],
            expose_headers=[
                "ETag",
                "Location",
                "Retry-After",
                "X-Consistency-Token",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
            max_age=600,
        )  # fmt: skip
    ]


def build_app(settings: Settings, *, lifespan: Any = None) -> Starlette:
    """Routes, middleware and error handlers. What runs behind them (connections,
    projectors, background steps) is composed by ``mgw.app.create_app`` and handed in as
    the ``lifespan``, which puts an ``AppContext`` in ``app.state.mgw``."""
    routes: list[BaseRoute] = [
        *health.routes,
        *content.routes,
        *moderation.routes,
        *catalog.routes,
        *webhooks.routes,
        *playback.routes,
        *playback_sessions.routes,
        *library.routes,
        *notifications.routes,
        *sync.routes,
        *search.routes,
        *ranking.routes,
        *experiments.routes,
        *search_analytics.routes,
        *activity.routes,
        *recommendations.routes,
        *realtime.routes,
        *device_commands.routes,
        *rebuilds.routes,
        *dead_letters.routes,
        *oauth.routes,
        *authorize.routes,
        *device.routes,
        *devices.routes,
        *accounts.routes,
        *sessions.routes,
        *mfa.routes,
        *api_keys.routes,
        *external.routes,
        *admin_users.routes,
        *admin_ratelimits.routes,
        *profiles.routes,
        *pages.routes,
        *admin_console.routes,
        *admin_health.routes,
    ]
    mcp = McpEndpoint(timeout_s=settings.mcp_timeout_s)
    routes += mcp_routes(mcp)
    routes.append(Route("/openapi.json", openapi_document, methods=["GET"]))
    routes += docs_page.routes
    both = _with_mcp(mcp, lifespan)
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(Traced),
            *_cors(settings),
            Middleware(HttpMetrics),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
            Middleware(RateLimitHeaders),
            Middleware(ConditionalGet),
        ],
        exception_handlers={
            Problem: problem_handler,
            EncodeError: encode_error_handler,
            HTTPException: http_exception_handler,
            **dict.fromkeys(transient_exceptions(), transient_handler),
            Exception: unhandled_handler,
        },
        lifespan=both,
    )
    # the same routes and lifespan, found through an index (api/routing.py)
    app.router = IndexedRouter(routes, lifespan=both)
    return app


def _with_mcp(mcp: McpEndpoint, lifespan: Any) -> Any:
    """The app's lifespan with the MCP transport's task group running inside it."""

    @contextlib.asynccontextmanager
    async def both(app: Starlette) -> AsyncIterator[None]:
        async with mcp.running():
            if lifespan is None:
                yield
            else:
                async with lifespan(app):
                    yield

    return both
