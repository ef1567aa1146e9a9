"""Second factor: TOTP enrolment, backup codes, and the check sign-in calls.

Enrolment is two steps. ``POST /v1/me/mfa/totp`` makes a secret and answers the
provisioning URI and its QR code (SVG); the secret waits, sealed, in Redis for ten
minutes. ``POST /v1/me/mfa/totp/confirm {"code"}`` proves the authenticator has it,
appends ``MfaEnabled`` with the sealed secret and ten backup codes (keyed hashes), and
shows the codes once. ``POST /v1/me/mfa/disable {"code"}`` and
``POST /v1/me/mfa/backup-codes {"code"}`` need a fresh code.

A TOTP code is accepted once: the last accepted time step per account is kept in Redis
and moved only forward, atomically (Lua), so neither the same code nor an older one in
the ±1 window can be replayed. A backup code is spent by an event the projector decides.
"""

from __future__ import annotations

import json
import time

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.context import AppContext, ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.identity.tokens import revoke_session
from api.ratelimit import limit
from api.requests import read_json
from domain.identity.opaque import keyed_hash, new_token, token_hash
from domain.identity.sealing import SealError, seal, unseal
from domain.identity.totp import (
    new_backup_codes,
    new_secret,
    normalize_backup_code,
    provisioning_uri,
    qr_svg,
    verify_code,
)
from projections.identity.accounts import User, backup_codes_left, unused_backup_code, user_by_id
from projections.identity.sessions import sessions_of

# KEYS[1] last step key; ARGV[1] step; ARGV[2] ttl. 1 when the step is newer and taken.
_ADVANCE = """
local last = tonumber(redis.call('GET', KEYS[1]) or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""
_PENDING_TTL_S = 600
MFA_TOKEN_TTL_S = 300


def _aad(user_id: str) -> str:
    return f"totp:{user_id}"


async def _take_step(c: AppContext, user_id: str, step: int) -> bool:
    key = f"mgw:totp:last:{token_hash(user_id)[:32]}"
    taken = await c.stores.redis.eval(_ADVANCE, 1, key, step, 120)
    return bool(taken)


async def check_totp(c: AppContext, user: User, code: str) -> bool:
    if user.mfa_secret_sealed is None:
        return False
    try:
        secret = unseal(c.identity.mfa_key, user.mfa_secret_sealed, aad=_aad(user.user_id))
    except SealError:
        return False
    step = verify_code(secret, code, now=time.time(), last_step=None)
    return step is not None and await _take_step(c, user.user_id, step)


async def check_backup_code(request: Request, user: User, raw: str) -> bool:
    c = ctx(request)
    code = normalize_backup_code(raw)
    if code is None:
        return False
    code_hash = keyed_hash(c.identity.code_key, code)
    async with c.stores.pg.connection() as conn:
        if not await unused_backup_code(conn, user.user_id, code_hash):
            return False
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "BackupCodeUsed",
            user.user_id,
            {"user_id": user.user_id, "code_hash": code_hash},
        ),
    )
    return outcome == "ok"


async def second_factor(
    request: Request, user: User, otp: str | None, backup_code: str | None
) -> str | None:
    """The amr value of a valid second factor ("otp" or "backup"), else None."""
    if otp and await check_totp(ctx(request), user, otp):
        return "otp"
    if backup_code and await check_backup_code(request, user, backup_code):
        return "backup"
    return None


# -- the mfa_token a password grant hands back when a second factor is needed ----------


async def issue_mfa_token(c: AppContext, user: User, state: dict[str, object]) -> str:
    token = new_token()
    await c.stores.redis.set(
        f"mgw:mfa:{token_hash(token)}",
        json.dumps({"user_id": user.user_id, **state}),
        ex=MFA_TOKEN_TTL_S,
    )
    return token


async def mfa_token_state(c: AppContext, token: str) -> dict[str, object] | None:
    if not 20 <= len(token) <= 256:
        return None
    raw = await c.stores.redis.get(f"mgw:mfa:{token_hash(token)}")
    if raw is None:
        return None
    state: dict[str, object] = json.loads(raw)
    return state


async def spend_mfa_token(c: AppContext, token: str) -> None:
    await c.stores.redis.delete(f"mgw:mfa:{token_hash(token)}")


# -- routes ---------------------------------------------------------------------------


class CodeIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    code: str = Field(min_length=6, max_length=32)


async def _me(request: Request) -> tuple[AppContext, User]:
    me = await require(request, "profile")
    c = ctx(request)
    async with c.stores.pg.connection() as conn:
        user = await user_by_id(conn, me.user_id)
    if user is None:
        raise Problem(404, "no such account", field="Authorization")
    return c, user


async def start_totp(request: Request) -> Response:
    c, user = await _me(request)
    if user.mfa_secret_sealed is not None:
        raise Problem(409, "MFA is already on; disable it first", field="mfa")
    if not user.email_verified:  # else a squatter's MFA would lock the real owner out
        raise Problem(403, "verify your email before turning on MFA", field="email")
    secret = new_secret()
    await c.stores.redis.set(
        f"mgw:totp:pending:{token_hash(user.user_id)[:32]}",
        seal(c.identity.mfa_key, secret, aad=_aad(user.user_id)),
        ex=_PENDING_TTL_S,
    )
    uri = provisioning_uri(secret, user.email, issuer="Media Gateway")
    return JSONResponse(
        {
            "secret": secret,
            "provisioning_uri": uri,
            "qr_svg": qr_svg(uri),
            "expires_in": _PENDING_TTL_S,
            "next": "POST /v1/me/mfa/totp/confirm with a code from the authenticator",
        },
        headers={"Cache-Control": "no-store"},
    )


async def confirm_totp(request: Request) -> Response:
    c, user = await _me(request)
    body = await read_json(request, CodeIn)
    await limit(request, "mfa", f"acct:{user.user_id}")
    sealed = await c.stores.redis.get(f"mgw:totp:pending:{token_hash(user.user_id)[:32]}")
    if sealed is None:
        raise Problem(409, "no enrolment pending: POST /v1/me/mfa/totp first", field="code")
    sealed = sealed.decode() if isinstance(sealed, bytes) else sealed
    secret = unseal(c.identity.mfa_key, sealed, aad=_aad(user.user_id))
    step = verify_code(secret, body.code, now=time.time(), last_step=None)
    if step is None or not await _take_step(c, user.user_id, step):
        raise Problem(422, "code: not the authenticator's current code", field="code")
    codes = new_backup_codes(10)
    outcome, _ = await decide(
        c,
        identity_event(
            request,
            "MfaEnabled",
            user.user_id,
            {
                "user_id": user.user_id,
                "secret_sealed": sealed,
                "backup_code_hashes": [keyed_hash(c.identity.code_key, x) for x in codes],
            },
        ),
    )
    await c.stores.redis.delete(f"mgw:totp:pending:{token_hash(user.user_id)[:32]}")
    # a session opened before the second factor existed (perhaps by whoever MFA is meant
    # to keep out) does not keep refreshing: every other session of the account ends
    me = await require(request, "profile")
    async with c.stores.pg.connection() as conn:
        others = [s for s in await sessions_of(conn, user.user_id) if s.family_id != me.session_id]
    for s in others:
        await revoke_session(request, user.user_id, s.family_id, "mfa_enabled")
    return JSONResponse(
        {"mfa_enabled": outcome == "ok", "backup_codes": codes},
        headers={"Cache-Control": "no-store"},
    )


async def _fresh_factor(request: Request, c: AppContext, user: User, code: str) -> None:
    if user.mfa_secret_sealed is None:
        raise Problem(409, "MFA is not on", field="mfa")
    await limit(request, "mfa", f"acct:{user.user_id}")
    if not await check_totp(c, user, code) and not await check_backup_code(request, user, code):
        raise Problem(
            422, "code: not a current authenticator code or unused backup code", field="code"
        )


async def disable(request: Request) -> Response:
    c, user = await _me(request)
    body = await read_json(request, CodeIn)
    await _fresh_factor(request, c, user, body.code)
    await decide(c, identity_event(request, "MfaDisabled", user.user_id, {"user_id": user.user_id}))
    return JSONResponse({"mfa_enabled": False})


async def regenerate_codes(request: Request) -> Response:
    c, user = await _me(request)
    body = await read_json(request, CodeIn)
    await _fresh_factor(request, c, user, body.code)
    codes = new_backup_codes(10)
    await decide(
        c,
        identity_event(
            request,
            "BackupCodesRegenerated",
            user.user_id,
            {
                "user_id": user.user_id,
                "backup_code_hashes": [keyed_hash(c.identity.code_key, x) for x in codes],
            },
        ),
    )
    return JSONResponse({"backup_codes": codes}, headers={"Cache-Control": "no-store"})


async def status(request: Request) -> Response:
    c, user = await _me(request)
    async with c.stores.pg.connection() as conn:
        left = await backup_codes_left(conn, user.user_id)
    return JSONResponse(
        {"mfa_enabled": user.mfa_secret_sealed is not None, "backup_codes_left": left}
    )


routes = [
    Route("/v1/me/mfa", status, methods=["GET"]),
    Route("/v1/me/mfa/totp", start_totp, methods=["POST"]),
    Route("/v1/me/mfa/totp/confirm", confirm_totp, methods=["POST"]),
    Route("/v1/me/mfa/disable", disable, methods=["POST"]),
    Route("/v1/me/mfa/backup-codes", regenerate_codes, methods=["POST"]),
]
