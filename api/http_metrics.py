"""Requests and latency per route for Prometheus (core/metrics.py).

A pure ASGI middleware, not ``BaseHTTPMiddleware``: it neither buffers a streaming
response nor runs the handler in another task. The ``route`` label is the route
*template* (``/v1/content/{content_id}``) Starlette's router matched, never the raw path,
so the number of series stays the number of routes; a path no route knows counts as
``unmatched``. A request is timed to the last byte of its body (a streaming response
included), not to the end of any background task that runs after it. WebSockets pass
through untouched (``mgw_realtime_sockets`` counts them).
"""

from __future__ import annotations

import time
from typing import Any

from starlette.routing import BaseRoute, Match, Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.metrics import HTTP_REQUESTS, HTTP_SECONDS

UNMATCHED = "unmatched"
# prometheus_client's labels() validates and locks on every call (1.4 % of a busy API
# process); the series are as many as routes x methods x statuses, so they are kept
_requests: dict[tuple[str, str, int], Any] = {}
_seconds: dict[tuple[str, str], Any] = {}


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets if the app fails before answering
        done = False

        def observe() -> None:
            nonlocal done
            done = True
            method, route = scope["method"], route_template(scope)
            counter = _requests.get((method, route, status))
            if counter is None:
                counter = _requests[(method, route, status)] = HTTP_REQUESTS.labels(
                    method, route, str(status)
                )
            counter.inc()
            timer = _seconds.get((method, route))
            if timer is None:
                timer = _seconds[(method, route)] = HTTP_SECONDS.labels(method, route)
            timer.observe(time.perf_counter() - started)

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                observe()

        try:
            await self.app(scope, receive, timed_send)
        finally:
            # an exception, a client that went away, or an app that never finished its body
            if not done:
                observe()


def route_template(scope: Scope) -> str:
    """The template of the route that matched (the router leaves it in the scope), or
    the first route whose path matches when the scope does not say."""
    route = scope.get("route")
    if route is None:
        route = _match(scope)
    if route is None:
        return UNMATCHED
    path = getattr(route, "path", None)
    if not isinstance(path, str) or not path:
        return UNMATCHED
    return f"{path}/{{path}}" if isinstance(route, Mount) else path


def _match(scope: Scope) -> BaseRoute | None:
    partial = None
    for r in getattr(scope.get("app"), "routes", ()):
        match, _ = r.matches(scope)
        if match is Match.FULL:
            return r  # type: ignore[no-any-return]
        if match is Match.PARTIAL and partial is None:
            partial = r  # the path is known, the method is not allowed
    return partial
