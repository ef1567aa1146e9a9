"""Routes that moved: the old path keeps answering until its sunset, and says so.

``moved(route, old_path, since=..., sunset=...)`` serves ``route``'s handler at
``old_path`` too. Every answer there, errors included, carries:

- ``Deprecation: @<unix seconds>`` (RFC 9745): when the path was deprecated;
- ``Sunset: <HTTP date>`` (RFC 8594): after this the path may stop answering;
- ``Link: <successor>; rel="successor-version"``: the same resource at its new path.

The OpenAPI document marks the old operation ``deprecated`` and lists these headers
(api/openapi.py reads ``__deprecation__`` and documents the handler behind it). Clients
can find every use of a deprecated path by logging responses that carry ``Deprecation``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.errors import Problem

_PARAM = re.compile(r"\{(\w+)(?::\w+)?\}")


@dataclass(frozen=True, slots=True)
class Deprecation:
    since: datetime
    sunset: datetime
    #: the path template that replaces the old one
    successor: str

    def headers(self, request: Request) -> dict[str, str]:
        url = _PARAM.sub(
            lambda m: quote(str(request.path_params.get(m.group(1), m.group(0))), safe=""),
            self.successor,
        )
        return {
            "Deprecation": f"@{int(self.since.timestamp())}",
            "Sunset": format_datetime(self.sunset, usegmt=True),
            "Link": f'<{url}>; rel="successor-version"',
        }


def moved(route: Route, old_path: str, *, since: datetime, sunset: datetime) -> Route:
    """``route``'s handler, also at ``old_path``, with the deprecation headers."""
    dep = Deprecation(since, sunset, route.path)
    endpoint: Callable[[Request], Awaitable[Response]] = route.endpoint

    @functools.wraps(endpoint)
    async def handler(request: Request) -> Response:
        try:
            response = await endpoint(request)
        except Problem as p:
            p.headers.update(dep.headers(request))
            raise
        response.headers.update(dep.headers(request))
        return response

    handler.__deprecation__ = dep  # type: ignore[attr-defined]
    methods = sorted((route.methods or {"GET"}) - {"HEAD"})
    return Route(old_path, handler, methods=methods, name=f"{route.name}_deprecated")
