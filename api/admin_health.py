"""The health dashboard: dependencies, projector lag, dead letters, rebuilds, recent errors.

* ``GET /admin/health``: the page (it reloads itself every ``REFRESH_S`` seconds);
* ``GET /admin/health.json``: the same data for scripts.

Both take the console's session cookie or ``Authorization: Bearer`` (an admin's access
token or API key with ``ops:read``); other callers get 403, and a browser without a session
is sent to ``/admin/login``. The data comes from the routes that own it, called in process
with the caller's credentials: ``/ready`` (every dependency, the lag in records of every
projector, which also sets ``mgw_projector_lag_seconds``, read back here),
``/v1/admin/dead-letters`` (pending dead letters) and ``/v1/admin/rebuilds``. Recent
errors are the last ``RECENT_ERRORS`` ERROR records of the ``mgw`` and ``uvicorn.error``
loggers in this process, kept by a ring-buffer handler installed when this module is
imported.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.admin_session import (
    AdminSession,
    api_client,
    current,
    end_session,
    login_redirect,
    render,
)
from api.authn import require
from api.errors import Problem
from core.metrics import PROJECTOR_LAG_SECONDS
from domain.identity.roles import ADMIN
from projections.registry import PROJECTORS

REFRESH_S = 10
RECENT_ERRORS = 50
#: dead letters counted at most (pages of 200); beyond it the count shows as a floor
DLQ_COUNT_MAX = 2000
_FINISHED_REBUILDS = frozenset({"done", "failed", "as_of_ready"})


class RecentErrors(logging.Handler):
    """The last ``capacity`` ERROR records, in memory."""

    def __init__(self, capacity: int = RECENT_ERRORS) -> None:
        super().__init__(logging.ERROR)
        self.records: deque[dict[str, Any]] = deque(maxlen=capacity)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        exc = record.exc_info[1] if record.exc_info else None
        self.records.append(
            {
                "at": datetime.fromtimestamp(record.created, UTC).isoformat(),
                "logger": record.name,
                "level": record.levelname,
                "message": message[:2000],
                "exception": f"{type(exc).__name__}: {exc}"[:2000] if exc else None,
            }
        )

    def newest_first(self) -> list[dict[str, Any]]:
        return list(reversed(self.records))


ERRORS = RecentErrors()


def install() -> None:
    """Attach the ring buffer to the loggers whose errors matter here (not the root: the
    CLI's logging set-up replaces the root's handlers). Idempotent."""
    for name in ("mgw", "uvicorn.error"):
        logger = logging.getLogger(name)
        if ERRORS not in logger.handlers:
            logger.addHandler(ERRORS)


install()


# -- the data -------------------------------------------------------------------------------


def _lag_seconds() -> dict[str, float | None]:
    """Per projector, the largest ``mgw_projector_lag_seconds`` over its topics."""
    by_topic: dict[tuple[str, str], float] = {}
    for metric in PROJECTOR_LAG_SECONDS.collect():
        for sample in metric.samples:
            by_topic[(sample.labels["projector"], sample.labels["topic"])] = sample.value
    out: dict[str, float | None] = {}
    for proj in PROJECTORS:
        ages = [by_topic[(proj.name, t)] for t in proj.topics if (proj.name, t) in by_topic]
        out[proj.name] = round(max(ages), 3) if ages else None
    return out


def _refused(r: Any) -> str:
    try:
        detail = r.json().get("detail", "")
    except ValueError:
        detail = r.text[:200]
    return f"{r.status_code}: {detail}"


async def _dead_letters(api: Any) -> dict[str, Any]:
    by_topic: Counter[str] = Counter()
    cursor: str | None = None
    seen = 0
    while seen < DLQ_COUNT_MAX:
        params = {"state": "pending", "limit": "200", **({"cursor": cursor} if cursor else {})}
        r = await api.get("/v1/admin/dead-letters", params=params)
        if r.status_code != 200:
            return {"error": _refused(r), "by_topic": {}}
        body = r.json()
        for item in body["items"]:
            by_topic[item["topic"]] += 1
        seen += len(body["items"])
        cursor = body.get("next_cursor")
        if not cursor:
            break
    return {
        "pending": seen,
        "more": cursor is not None,
        "by_topic": dict(sorted(by_topic.items())),
    }


async def _rebuilds(api: Any) -> dict[str, Any]:
    r = await api.get("/v1/admin/rebuilds", params={"limit": "50"})
    if r.status_code != 200:
        return {"error": _refused(r), "in_progress": []}
    items = r.json()["items"]
    return {"in_progress": [i for i in items if i.get("state") not in _FINISHED_REBUILDS]}


async def snapshot(request: Request, token: str) -> dict[str, Any]:
    """Everything the dashboard shows, as the caller (``token``) may see it."""
    started = time.monotonic()
    async with api_client(request, token) as api:
        ready = (await api.get("/ready")).json()
        dead_letters = await _dead_letters(api)
        rebuilds = await _rebuilds(api)
    lag_s = _lag_seconds()
    lags = ready.get("projectors", {})
    projectors = [
        {
            "name": p.name,
            "topics": list(p.topics),
            "lag_records": lags.get(p.name, {}).get("lag"),
            "lag_seconds": lag_s.get(p.name),
            "stopped": ready.get("stopped_projectors", {}).get(p.name),
        }
        for p in PROJECTORS
    ]
    backend = ready.get("log_backend")
    dependencies = [
        {"name": "kafka" if name == "log" and backend == "kafka" else name, **check}
        for name, check in ready.get("dependencies", {}).items()
    ]
    return {
        "status": ready.get("status"),
        "generated_at": datetime.now(UTC).isoformat(),
        "log_backend": backend,
        "dependencies": dependencies,
        "lag_error": lags.get("error") if isinstance(lags.get("error"), str) else None,
        "projectors": projectors,
        "starting": ready.get("starting", []),
        "dead_letters": dead_letters,
        "rebuilds": rebuilds,
        "recent_errors": ERRORS.newest_first(),
        "took_s": round(time.monotonic() - started, 3),
    }


# -- who may ----------------------------------------------------------------------------------


async def _bearer_admin(request: Request) -> str:
    """The bearer credential sent, when it is an admin's (401/403 otherwise)."""
    me = await require(request, "ops:read")
    if ADMIN not in me.roles:
        raise Problem(403, "the health dashboard is for admins", field="Authorization")
    return request.headers["Authorization"].partition(" ")[2].strip()


async def _caller(request: Request) -> tuple[str | None, AdminSession | None]:
    if "Authorization" in request.headers:
        return await _bearer_admin(request), None
    s = await current(request)
    return (s.access_token, s) if s is not None else (None, None)


async def _checked(request: Request, token: str, s: AdminSession | None) -> dict[str, Any] | None:
    data = await snapshot(request, token)
    denied = [v for v in (data["dead_letters"], data["rebuilds"]) if "error" in v]
    if s is not None and any(v["error"].startswith("401") for v in denied):
        await end_session(request, s)  # the token was revoked: the session is over
        return None
    return data


# -- routes ---------------------------------------------------------------------------------


async def health_page(request: Request) -> Response:
    token, s = await _caller(request)
    if token is None:
        return login_redirect(request)
    data = await _checked(request, token, s)
    if data is None:
        return login_redirect(request)
    return render(request, "health.html", s, refresh_s=REFRESH_S, **data)


async def health_json(request: Request) -> Response:
    """The health dashboard's data: dependencies, projector lag (records and seconds),
    pending dead letters per topic, rebuilds in progress, recent errors (admin).

    Takes an admin's bearer token (or API key with ``ops:read``), or the console's
    session cookie."""
    token, s = await _caller(request)
    if token is None:
        await require(request, "ops:read")  # no credential: 401
        raise Problem(401, "sign in", field="Authorization")
    data = await _checked(request, token, s)
    if data is None:
        raise Problem(401, "the console session ended: sign in again", field="Authorization")
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


routes = [
    Route("/admin/health", health_page, methods=["GET"], include_in_schema=False),
    Route("/admin/health.json", health_json, methods=["GET"]),
]
