"""Starlette's router with an index in front of its list.

Starlette finds a request's route by trying every route's regular expression in turn:
with some 150 routes, a write to /v1/playback/events paid for 14 regex matches and
the router's bookkeeping, about 4 % of the API process under load (py-spy,
bench/write_path.py). Most routes have no path parameters, so the answer for such a
path and method is fixed: it is computed once, by asking the router itself, and looked
up in a dict afterwards. Anything the index does not hold (paths with parameters,
405s, redirects, WebSockets) goes through the list as before, so the routing is the
same route for route.
"""

from __future__ import annotations

from starlette._utils import get_route_path
from starlette.routing import BaseRoute, Match, Route, Router
from starlette.types import Receive, Scope, Send


class IndexedRouter(Router):
    _index: dict[tuple[str, str], Route]
    _indexed_count = -1

    def _build_index(self) -> None:
        index: dict[tuple[str, str], Route] = {}
        for route in self.routes:
            if not isinstance(route, Route) or route.param_convertors or not route.methods:
                continue
            for method in route.methods:
                probe: Scope = {"type": "http", "path": route.path, "root_path": "",
                                "method": method}  # fmt: skip
                if self._first_full_match(probe) is route:
                    index[(route.path, method)] = route
        self._index = index
        self._indexed_count = len(self.routes)

    def _first_full_match(self, scope: Scope) -> BaseRoute | None:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return route
        return None

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self._indexed_count != len(self.routes):  # routes added since
                self._build_index()
            route = self._index.get((get_route_path(scope), scope["method"]))
            if route is not None:
                scope.setdefault("router", self)
                scope["route"] = route
                scope["endpoint"] = route.endpoint
                scope["path_params"] = dict(scope.get("path_params", {}))
                await route.handle(scope, receive, send)
                return
        await super().app(scope, receive, send)
