"""The device authorization grant (RFC 8628), for TVs and other devices without a keyboard.

``POST /oauth/device/code`` gives the device a ``device_code`` and a ``user_code`` like
``WDJB-MJHT``; the device polls ``/oauth/token`` (``device_grant``) and gets
``authorization_pending``, ``slow_down`` (+5 s), ``access_denied`` or ``expired_token``
until a user approves: at ``POST /oauth/device/approve`` with a full app session (not an
API key or a narrowed token: the device gets every scope the roles grant), or on the
``/device`` page (api/identity/pages.py).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.context import ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.identity.oauth_requests import (
    NO_STORE,
    OAuthError,
    client_for,
    need,
    read_params,
)
from api.identity.tokens import grant_scope, start_session
from api.ratelimit import limit
from core.ids import new_id, utcnow
from domain.identity import clients as grants
from domain.identity.clients import OAuthClient
from domain.identity.device import format_user_code, new_user_code, normalize_user_code
from domain.identity.opaque import new_token, token_hash
from domain.identity.roles import scopes_for
from projections.identity.accounts import user_by_id
from projections.identity.sessions import (
    device_grant_by_code,
    pending_device_grant,
)

DEVICE_TTL_S = 600


async def device_code(request: Request) -> Response:
    c = ctx(request)
    try:
        params = await read_params(request)
        client = client_for(c, params, grants.DEVICE)
        await limit(request, "device")
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
    await limit(request, "device", f"acct:{user_id}")
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


async def device_grant(
    request: Request, client: OAuthClient, params: dict[str, str]
) -> dict[str, Any]:
    c = ctx(request)
    device_code = need(params, "device_code")
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


routes = [
    Route("/oauth/device/code", device_code, methods=["POST"]),
    Route("/oauth/device/approve", device_approve, methods=["POST"]),
]
