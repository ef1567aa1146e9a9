"""The OAuth 2 authorization server: token, authorize, device, revoke, JWKS, discovery.

Grants at ``POST /oauth/token`` (form-encoded, or JSON):

* ``password`` for first-party clients (``mgw-app``); with MFA on, the answer is
  ``mfa_required`` with an ``mfa_token``, redeemed by the grant
  ``urn:mgw:params:oauth:grant-type:mfa`` with ``otp`` or ``backup_code`` (``otp`` may also
  be sent with the password at once);
* ``authorization_code`` with PKCE S256 only, the exact redirect URI of the code;
* ``refresh_token``: rotated on every use; a used one revokes its family;
* ``urn:ietf:params:oauth:grant-type:device_code`` (RFC 8628): the device polls and gets
  ``authorization_pending``, ``slow_down``, ``access_denied`` or ``expired_token`` until a
  signed-in user approves the code at ``POST /oauth/device/approve``.

Errors use RFC 6749's ``{"error", "error_description"}``. Wrong password, unknown account
and locked account give the same answer after the same work (one argon2 verification).
"""

from __future__ import annotations

import asyncio
import html
import json
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from api.authn import authenticate, require
from api.context import AppContext, ctx
from api.errors import Problem
from api.mfa import issue_mfa_token, mfa_token_state, second_factor, spend_mfa_token
from api.sessions import (
    NO_STORE,
    OIDC_SCOPES,
    OAuthError,
    append,
    decide,
    grant_scope,
    identity_event,
    revoke_session,
    rotate,
    start_session,
)
from core.ids import new_id, utcnow
from domain.identity import clients as grants
from domain.identity.clients import OAuthClient
from domain.identity.device import format_user_code, new_user_code, normalize_user_code
from domain.identity.opaque import new_token, token_hash
from domain.identity.pkce import valid_challenge, verify_s256
from domain.identity.roles import scopes_for
from domain.identity.tokens import InvalidToken, jwks
from projections.identity import User, user_by_email, user_by_id
from projections.sessions import (
    auth_code,
    device_grant_by_code,
    pending_device_grant,
    session_by_refresh,
)

MAX_PARAM = 4096
CODE_TTL_S = 60
DEVICE_TTL_S = 600
_GENERIC = "wrong email or password"
_EMAILISH = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{1,63}$")
#: sign-in pages: never cached, never framed (clickjacking)
PAGE_HEADERS = {
    **NO_STORE,
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "frame-ancestors 'none'; default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
    ),
}


async def read_params(request: Request) -> dict[str, str]:
    """Form (RFC 6749) or JSON body; a parameter sent twice is refused (§3.1)."""
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise OAuthError("invalid_request", "request body too large")
    ctype = request.headers.get("content-type", "")
    try:
        if "json" in ctype:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise OAuthError("invalid_request", "the JSON body must be an object")
            pairs = [(str(k), v) for k, v in data.items()]
        else:
            pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OAuthError("invalid_request", "the body is not valid form data or JSON") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise OAuthError("invalid_request", f"{k} is repeated")
        if not isinstance(v, str):
            raise OAuthError("invalid_request", f"{k} must be a string")
        if len(v) > MAX_PARAM or not _clean(v):
            raise OAuthError("invalid_request", f"{k} is too long or not valid text")
        out[k] = v
    return out


def _clean(value: str) -> bool:
    """Text PostgreSQL and the hashes can take: no NUL, no lone UTF-16 surrogates."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _need(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise OAuthError("invalid_request", f"{name} is required")
    return value


def _client(c: AppContext, params: dict[str, str], grant: str) -> OAuthClient:
    client_id = params.get("client_id", "")
    client: OAuthClient | None = c.identity.clients.get(client_id)
    if client is None:
        raise OAuthError("invalid_client", "unknown client_id", status=401)
    if not client.allows(grant):
        raise OAuthError("unauthorized_client", f"{client_id} may not use {grant}")
    return client


async def _limit(request: Request, rule: str, *subjects: str) -> None:
    limiter = ctx(request).identity.limiter
    if limiter is None:
        return
    from api.ratelimit import client_ip

    await limiter.enforce(request, rule, f"ip:{client_ip(request)}", *subjects)


# -- /oauth/token -------------------------------------------------------------------------


async def token(request: Request) -> Response:
    try:
        params = await read_params(request)
        grant = _need(params, "grant_type")
        handler = _GRANTS.get(grant)
        if handler is None:
            raise OAuthError("unsupported_grant_type", f"grant_type {grant!r} is not supported")
        client = _client(ctx(request), params, grant)
        body = await handler(request, client, params)
    except OAuthError as err:
        return err.response()
    return JSONResponse(body, headers=NO_STORE)


async def _password_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    username = _need(params, "username").strip().lower()
    password = _need(params, "password")
    await _limit(request, "login", f"acct:{username}")
    if len(username) > 254 or len(password) > 1024:
        raise OAuthError("invalid_grant", _GENERIC)
    async with c.stores.pg.connection() as conn:
        user = await user_by_email(conn, username)
    ident = c.identity
    if user is None or user.password_hash is None:
        await asyncio.to_thread(ident.passwords.dummy_verify, password)
        ok = False
    else:
        ok = await asyncio.to_thread(ident.passwords.verify, user.password_hash, password)
    if not ok or user is None or user.locked:
        await append(
            c,
            identity_event(
                request,
                "LoginFailed",
                user.user_id if user else "unknown",
                {
                    "user_id": user.user_id if user else None,
                    # only what looks like an email: a password typed in the wrong
                    # field must not land in the audit log
                    "email": username if _EMAILISH.match(username) else None,
                    "reason": "locked" if ok and user and user.locked else "credentials",
                },
            ),
        )
        raise OAuthError("invalid_grant", _GENERIC)
    assert user.password_hash is not None
    if ident.passwords.needs_rehash(user.password_hash):
        new_hash = await asyncio.to_thread(ident.passwords.hash, password)
        await append(
            c,
            identity_event(
                request,
                "PasswordChanged",
                user.user_id,
                {
                    "user_id": user.user_id,
                    "password_hash": new_hash,
                    "reason": "rehash",
                    "previous_hash": user.password_hash,
                },
            ),
        )
    scope = grant_scope(params.get("scope"), user.roles)
    amr = ["pwd"]
    if user.mfa_secret_sealed is not None:
        if params.get("otp") or params.get("backup_code"):
            await _limit(request, "mfa", f"acct:{user.user_id}")
        factor = await second_factor(request, user, params.get("otp"), params.get("backup_code"))
        if factor is None:
            if params.get("otp") or params.get("backup_code"):
                await _mfa_failed(request, user)
            mfa_token = await issue_mfa_token(
                c,
                user,
                {
                    "client_id": client.client_id,
                    "scope": scope,
                    "device_name": params.get("device_name"),
                    "credential": token_hash(user.password_hash),
                },
            )
            raise OAuthError(
                "mfa_required",
                "this account needs a second factor: send grant_type="
                f"{grants.MFA} with mfa_token and otp (or backup_code)",
                status=403,
                mfa_token=mfa_token,
            )
        amr.append(factor)
    return await start_session(
        request,
        user,
        client_id=client.client_id,
        method="password",
        amr=amr,
        scope=scope,
        device_name=(params.get("device_name") or None),
        credential=token_hash(user.password_hash),
    )


async def _mfa_failed(request: Request, user: User) -> None:
    await append(
        ctx(request),
        identity_event(
            request,
            "LoginFailed",
            user.user_id,
            {"user_id": user.user_id, "email": user.email.lower(), "reason": "mfa"},
        ),
    )


async def _mfa_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    mfa_token = _need(params, "mfa_token")
    state = await mfa_token_state(c, mfa_token)
    if state is None or state.get("client_id") != client.client_id:
        raise OAuthError("invalid_grant", "mfa_token is not valid or has expired; sign in again")
    user_id = str(state["user_id"])
    await _limit(request, "mfa", f"acct:{user_id}")
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, user_id)
    if user is None or user.locked:
        raise OAuthError("invalid_grant", _GENERIC)
    factor = await second_factor(request, user, params.get("otp"), params.get("backup_code"))
    if factor is None:
        await _mfa_failed(request, user)
        raise OAuthError("invalid_grant", "the code is not valid (a TOTP code works once)")
    await spend_mfa_token(c, mfa_token)
    return await start_session(
        request,
        user,
        client_id=client.client_id,
        method=str(state.get("method") or "password"),
        amr=[str(state.get("first_factor") or "pwd"), factor],
        scope=str(state.get("scope") or ""),
        device_name=str(state.get("device_name") or "") or None,
        credential=str(state["credential"]) if state.get("credential") else None,
    )


async def _refresh_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    presented = _need(params, "refresh_token")
    await _limit(request, "token", f"rt:{token_hash(presented)[:16]}")
    return await rotate(request, presented, client.client_id)


async def _code_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    code = _need(params, "code")
    verifier = _need(params, "code_verifier")
    redirect_uri = _need(params, "redirect_uri")
    await _limit(request, "token")
    code_hash = token_hash(code)
    async with c.stores.pg.connection() as conn:
        found = await auth_code(conn, code_hash)
        user = await user_by_id(conn, found.user_id) if found else None
    if found is None or user is None or found.client_id != client.client_id:
        raise OAuthError("invalid_grant", "the code is not valid")
    if found.redirect_uri != redirect_uri:
        raise OAuthError("invalid_grant", "redirect_uri does not match the authorization request")
    if not verify_s256(verifier, found.code_challenge):
        raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
    # spent or expired codes are refused by the projector too (a spent one revokes the
    # session it started): send it there rather than answer from a possibly stale read
    return await start_session(
        request,
        user,
        client_id=client.client_id,
        method="authorization_code",
        amr=list(found.amr),
        scope=found.scope,
        grant_ref=code_hash,
        nonce=found.nonce,
    )


async def _device_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    device_code = _need(params, "device_code")
    code_hash = token_hash(device_code)
    async with c.stores.pg.connection() as conn:
        grant = await device_grant_by_code(conn, code_hash)
    if grant is None or grant.client_id != client.client_id:
        raise OAuthError("invalid_grant", "device_code is not valid")
    if grant.expires_at <= utcnow():
        raise OAuthError("expired_token", "the code expired: start again with /oauth/device/code")
    # RFC 8628 §3.5: polling faster than the interval earns slow_down (and 5 s more)
    interval_key = f"mgw:device:poll:{code_hash[:32]}"
    interval = int(await c.stores.redis.get(f"{interval_key}:i") or grant.interval_s)
    if not await c.stores.redis.set(interval_key, 1, ex=interval, nx=True):
        interval += 5
        await c.stores.redis.set(f"{interval_key}:i", interval, ex=DEVICE_TTL_S)
        raise OAuthError("slow_down", f"poll at most every {interval} seconds", interval=interval)
    if grant.status == "pending":
        raise OAuthError("authorization_pending", "the user has not approved the code yet")
    if grant.status == "denied":
        raise OAuthError("access_denied", "the user denied the request")
    if grant.status != "approved" or grant.user_id is None:
        raise OAuthError("invalid_grant", "device_code was already used")
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, grant.user_id)
    if user is None:
        raise OAuthError("invalid_grant", "device_code is not valid")
    return await start_session(
        request,
        user,
        client_id=client.client_id,
        method="device_code",
        amr=["device"],
        scope=grant_scope(grant.scope or None, user.roles),
        grant_ref=code_hash,
        device_name=params.get("device_name") or None,
    )


_GRANTS = {
    grants.PASSWORD: _password_grant,
    grants.MFA: _mfa_grant,
    grants.REFRESH: _refresh_grant,
    grants.CODE: _code_grant,
    grants.DEVICE: _device_grant,
}


# -- device authorization (RFC 8628) ----------------------------------------------------


async def device_code(request: Request) -> Response:
    c = ctx(request)
    try:
        params = await read_params(request)
        client = _client(c, params, grants.DEVICE)
        await _limit(request, "device")
        scope = params.get("scope", "")
        grant_scope(scope or None, ("user",))  # unknown scopes are refused now
        for _ in range(3):
            device = new_token()
            user_code = new_user_code()
            device_id = new_id()
            outcome, _ = await decide(
                c,
                identity_event(
                    request,
                    "DeviceAuthorizationStarted",
                    device_id,
                    {
                        "user_id": None,
                        "device_id": device_id,
                        "device_code_hash": token_hash(device),
                        "user_code": user_code,
                        "client_id": client.client_id,
                        "scope": scope,
                        "expires_at": utcnow() + timedelta(seconds=DEVICE_TTL_S),
                        "interval_s": c.settings.identity.device_interval_s,
                    },
                ),
            )
            if outcome == "ok":
                break
        else:
            raise OAuthError("temporarily_unavailable", "could not allocate a user code", 503)
    except OAuthError as err:
        return err.response()
    verify = f"{c.settings.base_url}/device"
    shown = format_user_code(user_code)
    return JSONResponse(
        {
            "device_code": device,
            "user_code": shown,
            "verification_uri": verify,
            "verification_uri_complete": f"{verify}?{urlencode({'user_code': shown})}",
            "expires_in": DEVICE_TTL_S,
            "interval": c.settings.identity.device_interval_s,
        },
        headers=NO_STORE,
    )


async def device_approve(request: Request) -> Response:
    """A signed-in user approves (or denies) the code a TV shows."""
    me = await require(request, "profile")
    # the device gets every scope the account's roles grant: only a full session of the
    # user may hand that out, not an API key or a token narrowed to fewer scopes
    if me.kind != "user" or not scopes_for(me.roles) <= me.scopes:
        raise Problem(
            403, "approve devices from a signed-in app session, not a key", field="Authorization"
        )
    try:
        params = await read_params(request)
    except OAuthError as err:
        return err.response()
    approve = str(params.get("approve", "true")).lower() not in ("false", "0", "no", "deny")
    client_id = await decide_device(request, me.user_id, params.get("user_code", ""), approve)
    return JSONResponse({"approved": approve, "client_id": client_id})


async def decide_device(request: Request, user_id: str, typed: str, approve: bool) -> str:
    """Approve or deny the device showing ``typed``; its client id, or a Problem."""
    c = ctx(request)
    await _limit(request, "device", f"acct:{user_id}")
    code = normalize_user_code(typed)
    if code is None:
        raise Problem(422, "user_code: 8 letters as shown on the device", field="user_code")
    async with c.stores.pg.connection() as conn:
        grant = await pending_device_grant(conn, code)
    if grant is None:
        raise Problem(
            404, "no pending device with this code (expired or already used)", field="user_code"
        )
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "DeviceAuthorizationApproved" if approve else "DeviceAuthorizationDenied",
            user_id,
            {"device_id": grant.device_id, "user_code": code, "user_id": user_id},
        ),
    )
    if outcome != "ok":
        raise Problem(409, "the code was decided already or expired", field="user_code")
    return grant.client_id


# -- /oauth/authorize (authorization code + PKCE) ---------------------------------------


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
        bad = [k for k, v in params.items() if len(v) > MAX_PARAM or not _clean(v)]
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
            return None, [], _GENERIC, None
        return user, list(me.amr), "", me.scopes
    if request.method != "POST":
        return None, [], "", None
    username = params.get("username", "").strip().lower()
    await _limit(request, "login", f"acct:{username}")
    async with c.stores.pg.connection() as conn:
        user = await user_by_email(conn, username)
    password = params.get("password", "")
    if user is None or user.password_hash is None:
        await asyncio.to_thread(c.identity.passwords.dummy_verify, password)
        return None, [], _GENERIC, None
    ok = await asyncio.to_thread(c.identity.passwords.verify, user.password_hash, password)
    if not ok or user.locked:
        return None, [], _GENERIC, None
    amr = ["pwd"]
    if user.mfa_secret_sealed is not None:
        if params.get("otp"):
            await _limit(request, "mfa", f"acct:{user.user_id}")
        # one field takes either: an authenticator code or a backup code
        factor = await second_factor(request, user, params.get("otp"), params.get("otp"))
        if factor is None:
            return None, [], "enter the code from your authenticator", None
        amr.append(factor)
    return user, amr, "", None


# -- revocation, userinfo, keys, discovery -----------------------------------------------


async def revoke(request: Request) -> Response:
    """RFC 7009: always 200 for a well-formed request, whether or not the token was known."""
    c = ctx(request)
    try:
        params = await read_params(request)
        value = _need(params, "token")
    except OAuthError as err:
        return err.response()
    hint = params.get("token_type_hint")
    if hint != "access_token" and 20 <= len(value) <= 512:
        async with c.stores.pg.connection() as conn:
            session = await session_by_refresh(conn, token_hash(value))
        if session is not None and session.revoked_at is None:
            await revoke_session(request, session.user_id, session.family_id, "revoke")
            return Response(status_code=200, headers=NO_STORE)
    try:
        claims = c.identity.verifier.verify(value)
    except InvalidToken:
        return Response(status_code=200, headers=NO_STORE)
    await revoke_session(request, claims.subject, claims.session_id, "revoke")
    return Response(status_code=200, headers=NO_STORE)


async def userinfo(request: Request) -> Response:
    me = await require(request, "profile")
    async with ctx(request).stores.pg.connection() as conn:
        user = await user_by_id(conn, me.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    return JSONResponse(
        {
            "sub": user.user_id,
            "email": user.email,
            "email_verified": user.email_verified,
            "name": user.display_name,
        }
    )


async def jwks_document(request: Request) -> Response:
    return JSONResponse(
        jwks(ctx(request).identity.keyset), headers={"Cache-Control": "public, max-age=300"}
    )


async def openid_configuration(request: Request) -> Response:
    base = ctx(request).identity.issuer
    return JSONResponse(
        {
            "issuer": base,
            "authorization_endpoint": f"{base}/oauth/authorize",
            "token_endpoint": f"{base}/oauth/token",
            "device_authorization_endpoint": f"{base}/oauth/device/code",
            "revocation_endpoint": f"{base}/oauth/revoke",
            "userinfo_endpoint": f"{base}/oauth/userinfo",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "response_types_supported": ["code"],
            "grant_types_supported": sorted(grants.GRANTS),
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "id_token_signing_alg_values_supported": ["ES256"],
            "subject_types_supported": ["public"],
            "scopes_supported": [
                "openid",
                "email",
                "offline_access",
                "profile",
                "playback",
                "search",
            ],
            "claims_supported": ["sub", "email", "email_verified", "name", "amr", "nonce"],
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


routes = [
    Route("/oauth/token", token, methods=["POST"]),
    Route("/oauth/authorize", authorize, methods=["GET", "POST"]),
    Route("/oauth/device/code", device_code, methods=["POST"]),
    Route("/oauth/device/approve", device_approve, methods=["POST"]),
    Route("/oauth/revoke", revoke, methods=["POST"]),
    Route("/oauth/userinfo", userinfo, methods=["GET"]),
    Route("/.well-known/jwks.json", jwks_document, methods=["GET"]),
    Route("/.well-known/openid-configuration", openid_configuration, methods=["GET"]),
]
