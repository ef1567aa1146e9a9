"""api/routing.py: the indexed router picks the route Starlette's list would pick."""

from __future__ import annotations

from starlette.routing import Match, Route
from starlette.testclient import TestClient

from api.app import build_app
from api.routing import IndexedRouter
from core.settings import Settings


def _scan(routes: list, path: str, method: str) -> object:  # type: ignore[type-arg]
    scope = {"type": "http", "path": path, "root_path": "", "method": method}
    partial = None
    for r in routes:
        match, _ = r.matches(scope)
        if match is Match.FULL:
            return r
        if match is Match.PARTIAL and partial is None:
            partial = r
    return partial


def test_every_indexed_path_and_method_is_the_lists_first_full_match() -> None:
    app = build_app(Settings())
    router = app.router
    assert isinstance(router, IndexedRouter)
    router._build_index()
    static = {
        (r.path, m) for r in router.routes if isinstance(r, Route) and not r.param_convertors
        for m in r.methods or ()
    }  # fmt: skip
    assert len(router._index) > 50, "most paths without parameters are indexed"
    for (path, method), route in router._index.items():
        assert _scan(router.routes, path, method) is route, (path, method)
    # what is left out of the index is left out for a reason: the list picks another route
    for path, method in static - set(router._index):
        assert _scan(router.routes, path, method).path != path  # type: ignore[attr-defined]


def test_indexed_and_listed_routes_answer_as_before(settings: Settings) -> None:
    with TestClient(build_app(settings)) as client:
        assert client.get("/health").status_code == 200  # indexed
        r = client.delete("/v1/playback/events")  # the path is indexed, the method is not
        assert r.status_code == 405
        assert client.get("/v1/no-such-route").status_code == 404
        assert client.post("/v1/playback/events", json={}).status_code == 401
