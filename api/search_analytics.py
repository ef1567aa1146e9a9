"""Search analytics: clicks in, top queries and click-through out."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
