"""The admin console's sign-in, session cookie and CSRF tokens; the page chrome.

**Sign-in** is our own OAuth code flow with PKCE (S256), as any app would use it, by the
client ``mgw-admin`` whose one redirect URI is ``<public URL>/admin/callback``
(domain/identity/clients.py ``admin_console_client``):

1. ``GET /admin/login`` keeps a state and a code verifier in Redis for 10 minutes, binds
   the state to the browser with a short cookie and sends it to ``/oauth/authorize``;
2. the person signs in on that page (password, second factor);
3. ``GET /admin/callback`` checks the state against the cookie, spends the code at
   ``/oauth/token`` and keeps the tokens only when the account has the ``admin`` role
   (others are refused, 403, and the session they just got is revoked).

**The session** lives in Redis under a hash of a random id; the cookie holds only the id
(HttpOnly, SameSite=Strict, Secure on https or an https public URL, path ``/admin``,
8 hours at most). The access token is refreshed with the refresh token when it has less
than a minute left (one request refreshes; the others wait for it: refresh tokens rotate
and a second use would revoke the session). **CSRF**: each session has a random token;
every console form carries it in a hidden ``csrf`` field and a POST without the right one
is refused (403).
``POST /admin/logout`` revokes the session at ``/oauth/revoke`` and clears the cookie.

The console reads and writes only through the admin API, called in-process
(``api_client``) with the admin's own access token: one set of rules for people and
scripts.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import httpx
import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from api.context import ctx
from api.errors import Problem
from domain.identity.pkce import challenge_s256
from domain.identity.roles import ADMIN
from domain.identity.tokens import InvalidToken

CLIENT_ID = "mgw-admin"
COOKIE = "mgw_admin"
LOGIN_COOKIE = "mgw_admin_login"
COOKIE_PATH = "/admin"
SESSION_TTL_S = 8 * 3600
LOGIN_TTL_S = 600
REFRESH_MARGIN_S = 60
MAX_FORM_BYTES = 64 * 1024
_SESSION_KEY = "mgw:admin:session:"
_LOGIN_KEY = "mgw:admin:login:"

#: no scripts, no inline styles, nothing from elsewhere, never framed or cached
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self';"
    " frame-ancestors 'none'; base-uri 'none'"
)
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
NAV = (
    ("/admin/health", "Health"),
    ("/admin/users", "Users"),
    ("/admin/audit", "Audit log"),
    ("/admin/rate-limits", "Rate limits"),
    ("/admin/ranking", "Ranking"),
    ("/admin/experiments", "Experiments"),
    ("/admin/dead-letters", "Dead letters"),
    ("/admin/rebuilds", "Rebuilds"),
    ("/admin/moderation", "Moderation queue"),
)

_TEMPLATES = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent / "templates" / "admin"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
)


@dataclass(slots=True)
class AdminSession:
    sid: str
    user_id: str
    access_token: str
    refresh_token: str | None
    #: when the access token expires (epoch seconds)
    expires_at: int
    csrf: str
    started_at: float


class SignInRequired(Exception):
    """No console session (or it ended): a page sends the browser to ``/admin/login``."""


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _redis(request: Request) -> Any:
    redis = ctx(request).stores.redis
    if redis is None:
        raise Problem(503, "the admin console keeps its sessions in Redis: set REDIS_URL")
    return redis


def redirect_uri(request: Request) -> str:
    return f"{ctx(request).settings.base_url.rstrip('/')}/admin/callback"


def safe_next(raw: str | None) -> str:
    """Where to go after signing in: a console path of this site, nothing else."""
    if raw and raw.startswith("/admin") and "\\" not in raw and len(raw) <= 512:
        return raw
    return "/admin/health"


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/admin/login?next={quote(safe_next(target))}", status_code=303)


def _https(request: Request) -> bool:
    """The browser speaks https: to us, or to the proxy in front (the public URL's scheme)."""
    public = ctx(request).settings.base_url
    return request.url.scheme == "https" or public.startswith("https://")


def _cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        httponly=True,
        secure=_https(request),
        samesite="strict",
    )


# -- the API, in process -----------------------------------------------------------------


@contextlib.asynccontextmanager
async def api_client(request: Request, token: str | None) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for this app's own routes, in process, as the admin (``token``)."""
    headers = {"User-Agent": f"mgw-admin-console; {request.headers.get('user-agent', '')[:200]}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    peer = (request.client.host, request.client.port) if request.client else ("127.0.0.1", 0)
    transport = httpx.ASGITransport(app=request.app, raise_app_exceptions=False, client=peer)
    base = ctx(request).settings.base_url
    async with httpx.AsyncClient(
        transport=transport, base_url=base, headers=headers, timeout=60
    ) as client:
        yield client


def _claims_roles(request: Request, access_token: str) -> tuple[str, ...]:
    try:
        return tuple(ctx(request).identity.verifier.verify(access_token).roles)
    except InvalidToken:
        return ()


async def _revoke(request: Request, token: str | None) -> None:
    if token:
        async with api_client(request, None) as api:
            await api.post("/oauth/revoke", data={"token": token, "client_id": CLIENT_ID})


def _new_session(tokens: dict[str, Any], user_id: str) -> AdminSession:
    return AdminSession(
        sid=secrets.token_urlsafe(32),
        user_id=user_id,
        access_token=tokens["access_token"],
        refresh_token=tokens.get("refresh_token"),
        expires_at=int(time.time()) + int(tokens.get("expires_in", 0)),
        csrf=secrets.token_urlsafe(32),
        started_at=time.time(),
    )


async def _save(request: Request, s: AdminSession) -> None:
    ttl = max(1, int(s.started_at + SESSION_TTL_S - time.time()))
    await _redis(request).set(_SESSION_KEY + _digest(s.sid), json.dumps(asdict(s)), ex=ttl)


async def _load(request: Request, sid: str) -> AdminSession | None:
    raw = await _redis(request).get(_SESSION_KEY + _digest(sid))
    if raw is None:
        return None
    try:
        return AdminSession(**json.loads(raw))
    except (TypeError, ValueError):
        return None


async def end_session(request: Request, s: AdminSession) -> None:
    await _redis(request).delete(_SESSION_KEY + _digest(s.sid))


async def _refresh(request: Request, s: AdminSession) -> AdminSession | None:
    """A fresh access token; one request refreshes, the others wait for its result.
    Refresh tokens rotate and a spent one presented again revokes the whole session, so
    a request that read the session before another refreshed it must not refresh it."""
    redis = _redis(request)
    lock = _SESSION_KEY + _digest(s.sid) + ":refreshing"
    if not await redis.set(lock, b"1", nx=True, ex=15):
        for _ in range(50):
            await asyncio.sleep(0.1)
            again = await _load(request, s.sid)
            if again is None or again.refresh_token != s.refresh_token:
                return again
        return None
    try:
        latest = await _load(request, s.sid)
        if latest is None or latest.refresh_token != s.refresh_token:
            return latest  # ended, or refreshed by another request since ``s`` was read
        async with api_client(request, None) as api:
            r = await api.post(
                "/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "refresh_token": s.refresh_token or "",
                    "client_id": CLIENT_ID,
                },
            )
        if r.status_code != 200 or ADMIN not in _claims_roles(request, r.json()["access_token"]):
            await end_session(request, s)
            return None
        tokens = r.json()
        s.access_token = tokens["access_token"]
        s.refresh_token = tokens.get("refresh_token", s.refresh_token)
        s.expires_at = int(time.time()) + int(tokens.get("expires_in", 0))
        await _save(request, s)
        return s
    finally:
        await redis.delete(lock)


async def current(request: Request) -> AdminSession | None:
    """The console session of this browser, its access token fresh; None when signed out."""
    if "mgw.admin_session" in request.scope:
        return request.scope["mgw.admin_session"]  # type: ignore[no-any-return]
    sid = request.cookies.get(COOKIE, "")
    s = await _load(request, sid) if 20 <= len(sid) <= 100 else None
    if s is not None and s.expires_at - time.time() < REFRESH_MARGIN_S:
        s = await _refresh(request, s)
    request.scope["mgw.admin_session"] = s
    return s


async def read_form(request: Request, s: AdminSession) -> dict[str, str]:
    """A console form's fields, after its CSRF token was checked (403 when it is wrong)."""
    raw = await request.body()
    if len(raw) > MAX_FORM_BYTES:
        raise Problem(413, "form too large", field="body")
    try:
        pairs = parse_qsl(raw.decode(), keep_blank_values=True)
    except UnicodeDecodeError:
        raise Problem(400, "the form is not valid text", field="body") from None
    form = {k: v for k, v in pairs if "\x00" not in v}
    sent = form.pop("csrf", "")
    if not hmac.compare_digest(sent.encode(), s.csrf.encode()):
        raise Problem(
            403, "the form's CSRF token is missing or wrong: reload the page", field="csrf"
        )
    return form


def render(
    request: Request,
    template: str,
    session: AdminSession | None,
    status_code: int = 200,
    **values: Any,
) -> Response:
    page = _TEMPLATES.get_template(template).render(
        nav=NAV,
        path=request.url.path,
        signed_in=session is not None,
        csrf=session.csrf if session else "",
        **values,
    )
    return HTMLResponse(page, status_code=status_code, headers=PAGE_HEADERS)


def refusal(request: Request, status: int, message: str) -> Response:
    response = render(
        request, "message.html", None, status, title="Sign-in refused", message=message
    )
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


# -- routes ---------------------------------------------------------------------------------


async def login(request: Request) -> Response:
    nxt = safe_next(request.query_params.get("next"))
    if await current(request) is not None:
        return RedirectResponse(nxt, status_code=303)
    state, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(48)
    flow = json.dumps({"verifier": verifier, "next": nxt})
    await _redis(request).set(_LOGIN_KEY + _digest(state), flow, ex=LOGIN_TTL_S)
    query = urlencode(
        {
            "response_type": "code",
            "client_id": CLIENT_ID,
            "redirect_uri": redirect_uri(request),
            "code_challenge": challenge_s256(verifier),
            "code_challenge_method": "S256",
            "state": state,
        }
    )
    response = RedirectResponse(f"/oauth/authorize?{query}", status_code=303)
    _cookie(request, response, LOGIN_COOKIE, state, LOGIN_TTL_S)
    return response


async def callback(request: Request) -> Response:
    q = request.query_params
    state, bound = q.get("state", ""), request.cookies.get(LOGIN_COOKIE, "")
    if not state or not hmac.compare_digest(state.encode(), bound.encode()):
        return refusal(request, 400, "This sign-in was not started here or expired: sign in again.")
    raw = await _redis(request).getdel(_LOGIN_KEY + _digest(state))
    if raw is None:
        return refusal(request, 400, "This sign-in expired: sign in again.")
    flow = json.loads(raw)
    if q.get("error") or not q.get("code"):
        return refusal(request, 400, f"Sign-in failed: {q.get('error_description') or 'no code'}")
    async with api_client(request, None) as api:
        r = await api.post(
            "/oauth/token",
            data={
                "grant_type": "authorization_code",
                "code": q["code"],
                "code_verifier": flow["verifier"],
                "redirect_uri": redirect_uri(request),
                "client_id": CLIENT_ID,
            },
        )
    if r.status_code != 200:
        detail = r.json().get("error_description", "") if r.content else ""
        return refusal(request, 400, f"Sign-in failed: {detail or r.status_code}")
    tokens = r.json()
    try:
        claims = ctx(request).identity.verifier.verify(tokens["access_token"])
    except InvalidToken:
        return refusal(request, 400, "Sign-in failed: the token was refused.")
    if ADMIN not in claims.roles:
        await _revoke(request, tokens.get("refresh_token"))
        return refusal(request, 403, "This account is not an administrator.")
    s = _new_session(tokens, claims.subject)
    await _save(request, s)
    response = RedirectResponse(safe_next(flow.get("next")), status_code=303)
    _cookie(request, response, COOKIE, s.sid, SESSION_TTL_S)
    response.delete_cookie(LOGIN_COOKIE, path=COOKIE_PATH)
    return response


async def logout(request: Request) -> Response:
    s = await current(request)
    if request.method == "GET":
        if s is None:
            return render(request, "signed_out.html", None)
        return render(request, "logout.html", s)
    if s is not None:
        await read_form(request, s)
        await _revoke(request, s.refresh_token)
        await end_session(request, s)
    response = render(request, "signed_out.html", None)
    response.delete_cookie(COOKIE, path=COOKIE_PATH)
    return response


routes = [
    Route("/admin/login", login, methods=["GET"], include_in_schema=False),
    Route("/admin/callback", callback, methods=["GET"], include_in_schema=False),
    Route("/admin/logout", logout, methods=["GET", "POST"], include_in_schema=False),
]
