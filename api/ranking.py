"""Ranking profiles: read and set the fusion and re-rank weights (admin)."""

from __future__ import annotations

from starlette.routing import Route

routes: list[Route] = []
