"""A server span per request, when tracing is on (core/tracing.py).

OpenTelemetry's ASGI middleware does the work: it continues an incoming W3C
``traceparent``, records method, status and route, and makes its span current while the
handler runs, so an event a command appends carries the request's trace. The span is
named by the route template (``GET /v1/content/{content_id}``), never by the raw path, so
traces group by operation. Off, a request costs one flag test here.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from core import tracing


class Traced:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._traced: OpenTelemetryMiddleware | None = None
        self._for: object = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        p = tracing.provider()
        if p is None or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._for is not p:  # built once per provider (tests install their own)
            self._traced = OpenTelemetryMiddleware(
                self.app,
                tracer_provider=p,
                default_span_details=_details,
                exclude_spans=["receive", "send"],
            )
            self._for = p
        assert self._traced is not None
        await self._traced(scope, receive, send)


def _details(scope: Scope) -> tuple[str, dict[str, Any]]:
    method = scope.get("method", "WS")
    route = _template(scope)
    attrs: dict[str, Any] = {"http.route": route} if route else {}
    return (f"{method} {route or 'unmatched'}", attrs)


def _template(scope: Scope) -> str | None:
    app = scope.get("app")
    for r in getattr(app, "routes", ()):
        match, _ = r.matches(scope)
        if match is Match.FULL:
            return str(getattr(r, "path", "")) or None
    return None
