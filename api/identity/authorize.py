"""``/oauth/authorize``: the authorization code grant with PKCE (S256 only).

The client must be registered with the exact redirect URI; until that is known, errors are
shown, never redirected. The signed-in user is either a first-party app session presenting
its bearer token (the code then carries no scope that token lacks) or the sign-in form's
credentials and second factor. The code lives 60 s, is spent once (api/identity/oauth.py), and
``state`` comes back unchanged.
"""

from __future__ import annotations

import asyncio
import html
from datetime import timedelta
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from api.authn import authenticate
from api.context import ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.identity.mfa import second_factor
from api.identity.oauth_requests import (
    MAX_PARAM,
    NO_STORE,
    WRONG_CREDENTIALS,
    OAuthError,
    clean,
    read_params,
)
from api.identity.tokens import OIDC_SCOPES, grant_scope
from api.ratelimit import limit
from core.ids import utcnow
from domain.identity import clients as grants
from domain.identity.opaque import new_token, token_hash
from domain.identity.pkce import valid_challenge
from projections.identity.accounts import User, user_by_email, user_by_id

CODE_TTL_S = 60
#: sign-in pages: never cached, never framed (clickjacking)
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    ),
}


def _redirect_error(uri: str, state: str | None, error: str, description: str) -> Response:
    q = {"error": error, "error_description": description}
    if state is not None:
        q["state"] = state
    sep = "&" if "?" in uri else "?"
    return RedirectResponse(f"{uri}{sep}{urlencode(q)}", status_code=302)


_FORM = """<!doctype html><html><head><meta charset="utf-8"><title>Sign in</title></head>
<body><h1>Sign in to Media Gateway</h1><p>{client} asks to use your account.</p>
<p style="color:#a00">{error}</p>
<form method="post">{hidden}
<label>Email <input name="username" type="email" autocomplete="username" required></label>
<label>Password <input name="password" type="password"
 autocomplete="current-password" required></label>
<label>Authenticator or backup code (if enabled) <input name="otp"></label>
<button type="submit">Allow</button></form></body></html>"""


async def authorize(request: Request) -> Response:
    c = ctx(request)
    if request.method == "POST":
        try:
            params = await read_params(request)
        except OAuthError as err:
            return err.response()
    else:
        params = dict(request.query_params)
        bad = [k for k, v in params.items() if len(v) > MAX_PARAM or not clean(v)]
        if bad:
            return OAuthError("invalid_request", f"{bad[0]} is too long or malformed").response()
    client = c.identity.clients.get(params.get("client_id", ""))
    redirect_uri = params.get("redirect_uri", "")
    # before the redirect URI is known to be the client's, errors are shown, never sent
    if client is None or not client.allows(grants.CODE):
        return OAuthError(
            "invalid_client", "unknown client_id or not allowed the code flow"
        ).response()
    if redirect_uri not in client.redirect_uris:
        return OAuthError(
            "invalid_request", "redirect_uri is not registered for this client"
        ).response()
    state = params.get("state")
    if params.get("response_type") != "code":
        return _redirect_error(
            redirect_uri, state, "unsupported_response_type", "use response_type=code"
        )
    if params.get("code_challenge_method") != "S256" or not valid_challenge(
        params.get("code_challenge", "")
    ):
        return _redirect_error(
            redirect_uri, state, "invalid_request", "PKCE is required: code_challenge with S256"
        )
    try:
        requested = params.get("scope")
        grant_scope(requested, ("admin",))
    except OAuthError as err:
        return _redirect_error(redirect_uri, state, err.error, err.description)
    user, amr, error, ceiling = await authorizing_user(request, params)
    if user is None:
        if request.method == "GET" and not error and "Authorization" in request.headers:
            error = "the bearer token was refused"
        hidden = "".join(
            f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">'
            for k, v in params.items()
            if k not in ("username", "password", "otp")
        )
        page = _FORM.format(
            client=html.escape(client.name), error=html.escape(error), hidden=hidden
        )
        return HTMLResponse(page, status_code=401 if error else 200, headers=PAGE_HEADERS)
    scope = grant_scope(requested, user.roles)
    if ceiling is not None:
        scope = " ".join(s for s in scope.split() if s in ceiling or s in OIDC_SCOPES)
    code = new_token()
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "AuthorizationCodeIssued",
            user.user_id,
            {
                "user_id": user.user_id,
                "code_hash": token_hash(code),
                "client_id": client.client_id,
                "redirect_uri": redirect_uri,
                "code_challenge": params["code_challenge"],
                "scope": scope,
                "nonce": params.get("nonce"),
                "expires_at": utcnow() + timedelta(seconds=CODE_TTL_S),
                "amr": amr,
            },
        ),
    )
    if outcome != "ok":
        return _redirect_error(redirect_uri, state, "server_error", "the code was not issued")
    q = {"code": code}
    if state is not None:
        q["state"] = state
    sep = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(f"{redirect_uri}{sep}{urlencode(q)}", status_code=302)


async def authorizing_user(
    request: Request, params: dict[str, str]
) -> tuple[User | None, list[str], str, frozenset[str] | None]:
    """The signed-in user: a bearer token of a first-party app session (the app
    approving; the code gets no scope that token lacks), or the form's credentials.
    Returns (user, amr, error to show, scope ceiling or None)."""
    c = ctx(request)
    if "Authorization" in request.headers:
        try:
            me = await authenticate(request)
        except Problem:
            return None, [], "the bearer token was refused", None
        client = c.identity.clients.get(me.client_id or "") if me else None
        if me is None or me.kind != "user" or client is None or not client.first_party:
            return None, [], "sign in with your account", None
        async with c.stores.pg.connection() as conn:
            user = await user_by_id(conn, me.user_id)
        if user is None or user.locked:
            return None, [], WRONG_CREDENTIALS, None
        return user, list(me.amr), "", me.scopes
    if request.method != "POST":
        return None, [], "", None
    username = params.get("username", "").strip().lower()
    await limit(request, "login", f"acct:{username}")
    async with c.stores.pg.connection() as conn:
        user = await user_by_email(conn, username)
    password = params.get("password", "")
    if user is None or user.password_hash is None:
        await asyncio.to_thread(c.identity.passwords.dummy_verify, password)
        return None, [], WRONG_CREDENTIALS, None
    ok = await asyncio.to_thread(c.identity.passwords.verify, user.password_hash, password)
    if not ok or user.locked:
        return None, [], WRONG_CREDENTIALS, None
    amr = ["pwd"]
    if user.mfa_secret_sealed is not None:
        if params.get("otp"):
            await limit(request, "mfa", f"acct:{user.user_id}")
        # one field takes either: an authenticator code or a backup code
        factor = await second_factor(request, user, params.get("otp"), params.get("otp"))
        if factor is None:
            return None, [], "enter the code from your authenticator", None
        amr.append(factor)
    return user, amr, "", None


routes = [Route("/oauth/authorize", authorize, methods=["GET", "POST"])]
