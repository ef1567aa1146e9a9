"""The admin console's pages (docs/admin-console.md): server-rendered HTML and plain forms.

Users (search, lock and unlock, roles, sessions), the audit log, rate limits, ranking
profiles, experiments, dead letters, rebuilds and the catalog moderation queue. Every
page reads, and every form writes, through the admin API (``/v1/admin/...``) called in
process with the signed-in admin's access token (api/admin_session.py), so the console
follows the API's rules and leaves the same audit trail. A form posts back here with its
CSRF token and, when the API accepted the change, is redirected to the page it came from
(post/redirect/get); when the API refused it, the page says why with the API's status.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from api.admin_session import (
    AdminSession,
    SignInRequired,
    api_client,
    current,
    end_session,
    login_redirect,
    read_form,
    render,
)
from api.admin_session import routes as session_routes
from domain.identity.roles import ROLES
from domain.moderation import EDITABLE

_Handler = Callable[[Request, AdminSession, dict[str, str]], Awaitable[Response]]
#: ids, keys and names taken from a console path and put into an API path
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.:@-]{1,256}$")
STATIC = Path(__file__).resolve().parent / "static" / "admin"

#: what a form did, shown after its redirect (fixed texts: nothing from the query is echoed)
DONE = {
    "locked": "The account is locked and its sessions are revoked.",
    "unlocked": "The account is unlocked.",
    "granted": "The role was granted.",
    "revoked": "The role was removed.",
    "signed-out": "Every session of the account was revoked.",
    "rule-set": "The rate limit was set.",
    "profile-set": "The ranking profile was saved.",
    "experiment-set": "The experiment was saved.",
    "started": "The experiment started.",
    "stopped": "The experiment stopped.",
    "skipped": "The dead letter was skipped.",
    "approved": "The title was approved as it is and left the queue.",
    "hidden": "The title is hidden: gone from search, autocomplete and recommendations.",
    "unhidden": "The title is shown again.",
    "edited": "The edit was saved as an editorial record and the title left the queue.",
}


class ApiRefused(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def _id(raw: str) -> str:
    if not _SAFE_ID.match(raw) or ".." in raw:
        raise ApiRefused(404, "no such item")
    return quote(raw, safe=":@")


def _back(request: Request) -> str:
    """The console page a refused form came from (its path only), for a link back."""
    came = urlsplit(request.headers.get("referer", ""))
    if not came.path.startswith("/admin"):
        return ""
    return came.path + (f"?{came.query}" if came.query else "")


def page(fn: _Handler) -> Callable[[Request], Awaitable[Response]]:
    """A console page: signed in (else to the sign-in), its form CSRF-checked on POST,
    the API's refusals shown with their status."""

    @functools.wraps(fn)
    async def run(request: Request) -> Response:
        s = await current(request)
        if s is None:
            if request.method == "POST":
                return render(request, "message.html", None, 403, title="Signed out",
                              message="Your console session ended: sign in again.")  # fmt: skip
            return login_redirect(request)
        form = await read_form(request, s) if request.method == "POST" else {}
        try:
            return await fn(request, s, form)
        except SignInRequired:
            await end_session(request, s)
            return login_redirect(request)
        except ApiRefused as exc:
            return render(request, "message.html", s, exc.status, title="Refused",
                          message=exc.detail, back=_back(request))  # fmt: skip

    return run


async def call(
    request: Request,
    s: AdminSession,
    method: str,
    path: str,
    *,
    params: dict[str, str] | None = None,
    body: Any = None,
) -> Any:
    """The admin API's JSON answer; ``ApiRefused`` with its status and detail otherwise."""
    async with api_client(request, s.access_token) as api:
        r = await api.request(
            method, path, params={k: v for k, v in (params or {}).items() if v}, json=body
        )
    if r.status_code == 401:
        raise SignInRequired()
    if r.status_code >= 400:
        try:
            detail = r.json().get("detail") or r.text
        except ValueError:
            detail = r.text
        raise ApiRefused(r.status_code, str(detail)[:1000])
    return r.json() if r.content else None


def done(to: str, what: str) -> Response:
    sep = "&" if "?" in to else "?"
    return RedirectResponse(f"{to}{sep}done={what}", status_code=303)


def _flash(request: Request) -> str:
    return DONE.get(request.query_params.get("done", ""), "")


def _query(request: Request, *names: str) -> dict[str, str]:
    return {n: request.query_params.get(n, "")[:200] for n in names}


def _more(request: Request, cursor: str | None) -> str | None:
    if not cursor:
        return None
    q = {
        k: v
        for k, v in request.query_params.items()
        if k not in ("cursor", "done", "consistency_token", "edited")
    }
    return f"{request.url.path}?{urlencode({**q, 'cursor': cursor})}"


# -- users ----------------------------------------------------------------------------------


async def index(request: Request) -> Response:
    return RedirectResponse("/admin/health", status_code=303)


@page
async def users(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    q = _query(request, "q", "cursor")
    found = await call(request, s, "GET", "/v1/admin/users", params={**q, "limit": "50"})
    return render(request, "users.html", s, q=q["q"], users=found["items"],
                  more=_more(request, found["next_cursor"]))  # fmt: skip


@page
async def user(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    uid = _id(request.path_params["id"])
    found = await call(request, s, "GET", f"/v1/admin/users/{uid}")
    return render(request, "user.html", s, user=found, roles=ROLES, flash=_flash(request))


@page
async def user_action(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    uid = _id(request.path_params["id"])
    action = request.path_params["action"]
    back = f"/admin/users/{uid}"
    if action == "lock":
        body = {"reason": form.get("reason", "")}
        await call(request, s, "POST", f"/v1/admin/users/{uid}/lock", body=body)
        return done(back, "locked")
    if action == "unlock":
        await call(request, s, "POST", f"/v1/admin/users/{uid}/unlock")
        return done(back, "unlocked")
    if action == "sessions":
        await call(request, s, "POST", f"/v1/admin/users/{uid}/sessions/revoke")
        return done(back, "signed-out")
    if action == "roles":
        role = form.get("role", "")
        if role not in ROLES:
            raise ApiRefused(422, f"unknown role; known roles: {', '.join(ROLES)}")
        grant = form.get("grant") == "1"
        await call(request, s, "PUT" if grant else "DELETE", f"/v1/admin/users/{uid}/roles/{role}")
        return done(back, "granted" if grant else "revoked")
    raise ApiRefused(404, "no such action")


@page
async def audit(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    q = _query(request, "target", "action", "cursor")
    found = await call(request, s, "GET", "/v1/admin/audit", params={**q, "limit": "100"})
    return render(request, "audit.html", s, q=q, entries=found["items"],
                  more=_more(request, found["next_cursor"]))  # fmt: skip


# -- rate limits, ranking, experiments -------------------------------------------------------


def _int(form: dict[str, str], name: str) -> int:
    try:
        return int(form.get(name, ""))
    except ValueError:
        raise ApiRefused(422, f"{name} must be a whole number") from None


@page
async def rate_limits(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    if request.method == "POST":
        rule = _id(form.get("rule", ""))
        body = {"limit": _int(form, "limit"), "period_s": _int(form, "period_s")}
        await call(request, s, "PUT", f"/v1/admin/rate-limits/{rule}", body=body)
        return done("/admin/rate-limits", "rule-set")
    found = await call(request, s, "GET", "/v1/admin/rate-limits")
    return render(request, "rate_limits.html", s, rules=found["items"], flash=_flash(request))


@page
async def ranking(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    if request.method == "POST":
        name = _id(form.get("name", ""))
        weights: dict[str, float] = {}
        for k, v in form.items():
            if k.startswith("w.") and v.strip():
                try:
                    weights[k[2:]] = float(v)
                except ValueError:
                    raise ApiRefused(422, f"weight {k[2:]} must be a number") from None
        body: dict[str, Any] = {"weights": weights}
        if form.get("description"):
            body["description"] = form["description"]
        await call(request, s, "PUT", f"/v1/admin/ranking/profiles/{name}", body=body)
        return done("/admin/ranking", "profile-set")
    found = await call(request, s, "GET", "/v1/admin/ranking/profiles")
    return render(request, "ranking.html", s, profiles=found["items"], flash=_flash(request))


@page
async def experiments(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    if request.method == "POST":
        key = _id(form.get("key", ""))
        try:
            body = json.loads(form.get("definition", ""))
        except ValueError as exc:
            raise ApiRefused(422, f"the definition is not JSON: {exc}") from None
        await call(request, s, "PUT", f"/v1/admin/experiments/{key}", body=body)
        return done(f"/admin/experiments/{key}", "experiment-set")
    q = _query(request, "status", "cursor")
    found = await call(request, s, "GET", "/v1/admin/experiments", params={**q, "limit": "50"})
    return render(request, "experiments.html", s, q=q, experiments=found["items"],
                  more=_more(request, found["next_cursor"]), flash=_flash(request))  # fmt: skip


@page
async def experiment(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    key = _id(request.path_params["key"])
    found = await call(request, s, "GET", f"/v1/admin/experiments/{key}")
    try:
        results = await call(request, s, "GET", f"/v1/admin/experiments/{key}/results")
    except ApiRefused as exc:
        results = {"error": exc.detail}
    return render(request, "experiment.html", s, e=found, results=results,
                  results_json=json.dumps(results, indent=2), flash=_flash(request))  # fmt: skip


@page
async def experiment_action(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    key = _id(request.path_params["key"])
    action = request.path_params["action"]
    if action == "start":
        await call(request, s, "POST", f"/v1/admin/experiments/{key}/start")
        return done(f"/admin/experiments/{key}", "started")
    if action == "stop":
        body = {"reason": form["reason"]} if form.get("reason") else None
        await call(request, s, "POST", f"/v1/admin/experiments/{key}/stop", body=body)
        return done(f"/admin/experiments/{key}", "stopped")
    raise ApiRefused(404, "no such action")


# -- dead letters, rebuilds ------------------------------------------------------------------


@page
async def dead_letters(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    if request.method == "POST":
        letter = _id(form.get("id", ""))
        body = {"note": form.get("note", "")}
        await call(request, s, "POST", f"/v1/admin/dead-letters/{letter}/skip", body=body)
        return done("/admin/dead-letters", "skipped")
    q = _query(request, "topic", "projector", "state", "cursor")
    found = await call(request, s, "GET", "/v1/admin/dead-letters", params={**q, "limit": "100"})
    return render(request, "dead_letters.html", s, q=q, letters=found["items"],
                  more=_more(request, found["next_cursor"]), flash=_flash(request))  # fmt: skip


@page
async def rebuilds(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    found = await call(request, s, "GET", "/v1/admin/rebuilds", params={"limit": "100"})
    return render(request, "rebuilds.html", s, rebuilds=found["items"])


# -- moderation ------------------------------------------------------------------------------

#: the queue's filters (``GET /v1/admin/moderation?status=``)
MODERATION_STATUSES = ("open", "hidden", "all")
#: a decision's action -> its flash message
_DECIDED = {"approve": "approved", "hide": "hidden", "unhide": "unhidden", "edit": "edited"}
#: a consistency token (topic:partition:offset) carried from a decision to the next page
_TOKEN = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _status(raw: str) -> str:
    return raw if raw in MODERATION_STATUSES else "open"


def _after(request: Request, name: str) -> str:
    """A consistency token from the query (the last decision's), so the page shows it."""
    raw = request.query_params.get(name, "")
    return raw if _TOKEN.match(raw) else ""


def _edits(form: dict[str, str]) -> dict[str, Any]:
    """The canonical fields the edit form changed: ``f.<name>`` unlike ``was.<name>`` (what
    the form showed). A field emptied is cleared (genres: none); one left empty that showed
    nothing is not sent."""
    out: dict[str, Any] = {}
    for name in EDITABLE:
        new = form.get(f"f.{name}", "").strip()
        if new == form.get(f"was.{name}", "").strip():
            continue
        if name == "genres":
            out[name] = [g.strip() for g in new.split(",") if g.strip()]
        elif not new:
            out[name] = None
        elif name in ("year", "runtime_min"):
            try:
                out[name] = int(new)
            except ValueError:
                raise ApiRefused(422, f"{name} must be a whole number") from None
        else:
            out[name] = new
    return out


@page
async def moderation(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    q = _query(request, "status", "cursor", "limit")
    q["status"] = _status(q["status"])
    q["limit"] = q["limit"] if q["limit"].isdigit() and 0 < int(q["limit"]) <= 200 else "50"
    params = {**q, "consistency_token": _after(request, "consistency_token")}
    found = await call(request, s, "GET", "/v1/admin/moderation", params=params)
    return render(request, "moderation.html", s, q=q, items=found["items"],
                  statuses=MODERATION_STATUSES, more=_more(request, found["next_cursor"]),
                  flash=_flash(request))  # fmt: skip


@page
async def moderation_title(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    cid = _id(request.path_params["id"])
    after = {"consistency_token": _after(request, "consistency_token")}
    record = await call(request, s, "GET", f"/v1/admin/moderation/{cid}", params=after)
    try:  # the canonical fields as they read now, to edit (hidden titles included)
        edited = {"consistency_token": _after(request, "edited")}
        current = await call(request, s, "GET", f"/v1/content/{cid}", params=edited)
    except ApiRefused:
        current = {"title": record["title"], "year": record["year"]}
    return render(request, "moderation_title.html", s, item=record, current=current,
                  flash=_flash(request))  # fmt: skip


@page
async def moderation_decide(request: Request, s: AdminSession, form: dict[str, str]) -> Response:
    cid = _id(request.path_params["id"])
    action = form.get("action", "")
    if action not in _DECIDED:
        raise ApiRefused(422, f"action must be one of {', '.join(_DECIDED)}")
    body: dict[str, Any] = {"action": action, "note": form.get("note", "")}
    if action == "edit":
        body["fields"] = _edits(form)
    answer = await call(request, s, "POST", f"/v1/admin/moderation/{cid}/decisions", body=body)
    # the next page waits for the decision (and the edit), so it shows them
    after = {"consistency_token": str(answer["position"])}
    if answer.get("edit_position"):
        after["edited"] = str(answer["edit_position"])
    if form.get("from") == "title":
        to = f"/admin/moderation/{cid}?{urlencode(after)}"
    else:
        to = f"/admin/moderation?{urlencode({'status': _status(form.get('status', '')), **after})}"
    return done(to, _DECIDED[action])


def _page_route(path: str, fn: Callable[..., Any], methods: list[str]) -> Route:
    return Route(path, fn, methods=methods, include_in_schema=False)


routes = [
    _page_route("/admin", index, ["GET"]),
    *session_routes,
    _page_route("/admin/users", users, ["GET"]),
    _page_route("/admin/users/{id}", user, ["GET"]),
    _page_route("/admin/users/{id}/{action}", user_action, ["POST"]),
    _page_route("/admin/audit", audit, ["GET"]),
    _page_route("/admin/rate-limits", rate_limits, ["GET", "POST"]),
    _page_route("/admin/ranking", ranking, ["GET", "POST"]),
    _page_route("/admin/experiments", experiments, ["GET", "POST"]),
    _page_route("/admin/experiments/{key}", experiment, ["GET"]),
    _page_route("/admin/experiments/{key}/{action}", experiment_action, ["POST"]),
    _page_route("/admin/dead-letters", dead_letters, ["GET", "POST"]),
    _page_route("/admin/rebuilds", rebuilds, ["GET"]),
    _page_route("/admin/moderation", moderation, ["GET"]),
    _page_route("/admin/moderation/{id}", moderation_title, ["GET"]),
    _page_route("/admin/moderation/{id}/decide", moderation_decide, ["POST"]),
    Mount("/admin/static", StaticFiles(directory=STATIC), name="admin-static"),
]
