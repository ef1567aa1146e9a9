"""``GET /v1/admin/rebuilds``: how the operator's projection rebuilds (``mgw rebuild``)
are going: state, records done of the total, when it switched, the checksums."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.context import ctx
from api.errors import Problem
from api.requests import int_param
from core.ids import iso_z
from projections import maintenance

SCOPE = "ops:read"


def _view(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: iso_z(v) if isinstance(v, datetime) else v for k, v in row.items()}
    total = row["records_total"] or 0
    out["progress"] = round(min(1.0, row["records_done"] / total), 4) if total else None
    return out


async def list_rebuilds(request: Request) -> Response:
    await require(request, SCOPE)
    projector = request.query_params.get("projector") or None
    limit = int_param(request, "limit", 20, 1, 200)
    async with ctx(request).stores.pg.connection() as conn:
        rows = await maintenance.rebuilds(conn, projector, limit)
    return JSONResponse({"items": [_view(r) for r in rows]})


async def get_rebuild(request: Request) -> Response:
    await require(request, SCOPE)
    rid = request.path_params["rebuild_id"]
    if len(rid) > 64:
        raise Problem(404, "no such rebuild", field="rebuild_id")
    async with ctx(request).stores.pg.connection() as conn:
        rows = await maintenance.rebuilds(conn, rebuild_id=rid, limit=1)
    if not rows:
        raise Problem(404, "no such rebuild", field="rebuild_id")
    return JSONResponse(_view(rows[0]))


routes = [
    Route("/v1/admin/rebuilds", list_rebuilds, methods=["GET"]),
    Route("/v1/admin/rebuilds/{rebuild_id}", get_rebuild, methods=["GET"]),
]
