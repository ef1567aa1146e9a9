"""Sessions (refresh-token families), authorization codes and device grants.

Handlers called by the identity projector (projections/identity/accounts.py) inside its batch
transaction, and the queries the token endpoint reads.

A session is a family of refresh tokens: each use of the current token moves the family
to a new one. A token that was already used, presented again, means it was copied: the
whole family is revoked (OAuth 2.1 refresh token rotation with reuse detection). A
single-use grant (authorization code, device code) spent twice revokes the session the
first spend created, as RFC 6749 §4.1.2 recommends for codes.

Revocations are appended to ``token_revocations`` so each API process can refuse access
tokens of revoked sessions from memory (api/authn.py), without a query per request.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from projections.base import Envelope, fetch_rows

Outcome = tuple[str, dict[str, Any]] | None
OK: Outcome = ("ok", {})


async def revoke_family(
    conn: AsyncConnection[Any], family_id: str, at: datetime, reason: str
) -> bool:
    cur = await conn.execute(
        "UPDATE sessions SET revoked_at = %s, revoked_reason = %s"
        " WHERE family_id = %s AND revoked_at IS NULL RETURNING user_id",
        (at, reason, family_id),
    )
    row = await cur.fetchone()
    if row is None:
        return False
    await conn.execute(
        "INSERT INTO token_revocations (family_id, user_id, at) VALUES (%s, %s, %s)",
        (family_id, row[0], at),
    )
    return True


async def invalidate_access_tokens(conn: AsyncConnection[Any], user_id: str, at: datetime) -> None:
    """Access tokens of this user issued before ``at`` stop working (sessions live on)."""
    await conn.execute(
        "UPDATE users SET tokens_valid_after = GREATEST(tokens_valid_after, %s) WHERE user_id = %s",
        (at, user_id),
    )
    await conn.execute(
        "INSERT INTO token_revocations (user_id, valid_after, at) VALUES (%s, %s, %s)",
        (user_id, at, at),
    )


async def revoke_all(conn: AsyncConnection[Any], user_id: str, at: datetime, reason: str) -> None:
    # one row per family: the API's check of a token's session id is exact, while the
    # user-wide valid_after is compared to the token's iat (milliseconds)
    await conn.execute(
        "WITH gone AS (UPDATE sessions SET revoked_at = %s, revoked_reason = %s"
        " WHERE user_id = %s AND revoked_at IS NULL RETURNING family_id)"
        " INSERT INTO token_revocations (family_id, user_id, at)"
        " SELECT family_id, %s, %s FROM gone",
        (at, reason, user_id, user_id, at),
    )
    await invalidate_access_tokens(conn, user_id, at)


async def _user_state(conn: AsyncConnection[Any], user_id: str) -> tuple[bool, bool] | None:
    """(exists, locked)"""
    rows = await fetch_rows(conn, "SELECT locked FROM users WHERE user_id = %s", (user_id,))
    return (True, bool(rows[0][0])) if rows else None


async def _spend_grant(
    conn: AsyncConnection[Any], grant_ref: str, user_id: str, at: datetime
) -> Outcome:
    """Mark a code spent; None when it may be spent now, else the refusal."""
    earlier = await fetch_rows(
        conn, "SELECT family_id FROM sessions WHERE grant_ref = %s", (grant_ref,)
    )
    if earlier:
        await revoke_family(conn, earlier[0][0], at, "code_reuse")
        return ("reused", {"field": "code"})
    code = await fetch_rows(
        conn,
        "SELECT c.user_id, c.expires_at, c.used_at,"
        " u.tokens_valid_after IS NOT NULL AND c.created_at < u.tokens_valid_after"
        " FROM auth_codes c JOIN users u USING (user_id) WHERE c.code_hash = %s",
        (grant_ref,),
    )
    if code:
        owner, expires_at, used_at, predates_revocation = code[0]
        # a code issued before a reset, lock or "sign out everywhere" dies with the
        # sessions of that moment
        if owner != user_id or used_at is not None or predates_revocation:
            return ("invalid", {"field": "code"})
        if at >= expires_at:
            return ("expired", {"field": "code"})
        await conn.execute(
            "UPDATE auth_codes SET used_at = %s WHERE code_hash = %s", (at, grant_ref)
        )
        return None
    device = await fetch_rows(
        conn,
        "SELECT user_id, expires_at, status FROM device_grants WHERE device_code_hash = %s",
        (grant_ref,),
    )
    if device:
        owner, expires_at, status = device[0]
        if status != "approved" or owner != user_id:
            return ("invalid", {"field": "device_code"})
        if at >= expires_at:
            return ("expired", {"field": "device_code"})
        await conn.execute(
            "UPDATE device_grants SET status = 'used' WHERE device_code_hash = %s", (grant_ref,)
        )
        return None
    return ("invalid", {"field": "code"})


async def _started(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    state = await _user_state(conn, p["user_id"])
    if state is None:
        return ("invalid", {"field": "user_id"})
    if state[1]:
        return ("locked", {})
    if p.get("credential"):
        rows = await fetch_rows(
            conn, "SELECT password_hash FROM users WHERE user_id = %s", (p["user_id"],)
        )
        current = rows[0][0] or ""
        # the password checked by the API is no longer the account's (a reset or a
        # change came first in the log): that sign-in must not outlive it
        if hashlib.sha256(current.encode()).hexdigest() != p["credential"]:
            return ("stale", {})
    if p["grant_ref"] is not None:
        refused = await _spend_grant(conn, p["grant_ref"], p["user_id"], at)
        if refused is not None:
            return refused
    await conn.execute(
        "INSERT INTO sessions (family_id, user_id, client_id, method, amr, scope, device_name,"
        " current_hash, grant_ref, created_at, last_used_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (family_id) DO NOTHING",
        (
            p["family_id"],
            p["user_id"],
            p["client_id"],
            p["method"],
            list(p["amr"]),
            p["scope"],
            p["device_name"],
            p["refresh_hash"],
            p["grant_ref"],
            at,
            at,
            p["expires_at"],
        ),
    )
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (token_hash) DO NOTHING",
        (p["refresh_hash"], p["family_id"], p["user_id"], at),
    )
    return OK


async def _rotated(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    rows = await fetch_rows(
        conn,
        "SELECT s.current_hash, s.revoked_at, s.expires_at, s.user_id, u.locked"
        " FROM refresh_tokens t JOIN sessions s USING (family_id)"
        " JOIN users u ON u.user_id = s.user_id WHERE t.token_hash = %s",
        (p["presented_hash"],),
    )
    if not rows or rows[0][3] != p["user_id"]:
        return ("invalid", {"field": "refresh_token"})
    current, revoked_at, expires_at, _, locked = rows[0]
    if revoked_at is not None:
        return ("revoked", {"field": "refresh_token"})
    if locked:
        return ("locked", {})
    if at >= expires_at:
        return ("expired", {"field": "refresh_token"})
    if current != p["presented_hash"]:
        await revoke_family(conn, p["family_id"], at, "reuse")
        return ("reuse", {"field": "refresh_token", "family_id": p["family_id"]})
    await conn.execute(
        "UPDATE refresh_tokens SET used_at = %s WHERE token_hash = %s", (at, p["presented_hash"])
    )
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, family_id, user_id, issued_at)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (token_hash) DO NOTHING",
        (p["refresh_hash"], p["family_id"], p["user_id"], at),
    )
    await conn.execute(
        "UPDATE sessions SET current_hash = %s, last_used_at = %s, rotations = rotations + 1"
        " WHERE family_id = %s",
        (p["refresh_hash"], at, p["family_id"]),
    )
    return OK


async def _revoked(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    rows = await fetch_rows(
        conn, "SELECT user_id FROM sessions WHERE family_id = %s", (p["family_id"],)
    )
    if not rows or rows[0][0] != p["user_id"]:
        return ("invalid", {"field": "session_id"})
    await revoke_family(conn, p["family_id"], at, p["reason"])
    return OK


async def _revoked_all(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    await revoke_all(conn, e.payload["user_id"], at, e.payload["reason"])
    return OK


async def _code_issued(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    await conn.execute(
        "INSERT INTO auth_codes (code_hash, user_id, client_id, redirect_uri, code_challenge,"
        " scope, nonce, amr, created_at, expires_at) VALUES"
        " (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (code_hash) DO NOTHING",
        (
            p["code_hash"],
            p["user_id"],
            p["client_id"],
            p["redirect_uri"],
            p["code_challenge"],
            p["scope"],
            p["nonce"],
            list(p["amr"]),
            at,
            p["expires_at"],
        ),
    )
    return OK


async def _device_started(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    clash = await fetch_rows(
        conn,
        "SELECT 1 FROM device_grants WHERE user_code = %s AND status = 'pending'"
        " AND expires_at > %s",
        (p["user_code"], at),
    )
    if clash:
        return ("conflict", {"field": "user_code"})
    await conn.execute(
        "INSERT INTO device_grants (device_id, device_code_hash, user_code, client_id, scope,"
        " interval_s, status, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, 'pending', %s, %s) ON CONFLICT DO NOTHING",
        (
            p["device_id"],
            p["device_code_hash"],
            p["user_code"],
            p["client_id"],
            p["scope"],
            p["interval_s"],
            at,
            p["expires_at"],
        ),
    )
    return OK


async def _device_decided(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    status = "approved" if e.event_type == "DeviceAuthorizationApproved" else "denied"
    cur = await conn.execute(
        "UPDATE device_grants SET status = %s, user_id = %s, decided_at = %s"
        " WHERE device_id = %s AND user_code = %s AND status = 'pending' AND expires_at > %s",
        (status, p["user_id"], at, p["device_id"], p["user_code"], at),
    )
    return OK if cur.rowcount == 1 else ("invalid", {"field": "user_code"})


async def _renamed(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    cur = await conn.execute(
        "UPDATE sessions SET device_name = %s WHERE family_id = %s AND user_id = %s"
        " AND revoked_at IS NULL",
        (p["device_name"], p["family_id"], p["user_id"]),
    )
    return OK if cur.rowcount == 1 else ("invalid", {"field": "device_id"})


Handler = Callable[[AsyncConnection[Any], Envelope, datetime], Awaitable[Outcome]]
HANDLERS: dict[str, Handler] = {
    "SessionStarted": _started,
    "RefreshTokenRotated": _rotated,
    "SessionRevoked": _revoked,
    "SessionsRevoked": _revoked_all,
    "DeviceRenamed": _renamed,
    "AuthorizationCodeIssued": _code_issued,
    "DeviceAuthorizationStarted": _device_started,
    "DeviceAuthorizationApproved": _device_decided,
    "DeviceAuthorizationDenied": _device_decided,
}


# -- queries ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Session:
    family_id: str
    user_id: str
    client_id: str
    method: str
    amr: tuple[str, ...]
    scope: str
    device_name: str | None
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    revoked_at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.family_id,
            "client_id": self.client_id,
            "method": self.method,
            "device_name": self.device_name,
            "created_at": self.created_at.isoformat(),
            "last_used_at": self.last_used_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "revoked": self.revoked_at is not None,
        }


_SESSION = (
    "s.family_id, s.user_id, s.client_id, s.method, s.amr, s.scope, s.device_name,"
    " s.created_at, s.last_used_at, s.expires_at, s.revoked_at"
)


def _session(r: Sequence[Any]) -> Session:
    return Session(r[0], r[1], r[2], r[3], tuple(r[4]), *r[5:])


async def session_by_refresh(conn: AsyncConnection[Any], token_hash: str) -> Session | None:
    rows = await fetch_rows(
        conn,
        f"SELECT {_SESSION} FROM refresh_tokens t JOIN sessions s USING (family_id)"
        " WHERE t.token_hash = %s",
        (token_hash,),
    )
    return _session(rows[0]) if rows else None


async def session_by_id(conn: AsyncConnection[Any], family_id: str) -> Session | None:
    rows = await fetch_rows(
        conn, f"SELECT {_SESSION} FROM sessions s WHERE s.family_id = %s", (family_id,)
    )
    return _session(rows[0]) if rows else None


async def sessions_of(
    conn: AsyncConnection[Any], user_id: str, *, active_only: bool = True
) -> list[Session]:
    rows = await fetch_rows(
        conn,
        f"SELECT {_SESSION} FROM sessions s WHERE s.user_id = %s"
        " AND (NOT %s OR (s.revoked_at IS NULL AND s.expires_at > now()))"
        " ORDER BY s.created_at DESC LIMIT 200",
        (user_id, active_only),
    )
    return [_session(r) for r in rows]


@dataclass(frozen=True, slots=True)
class AuthCode:
    user_id: str
    client_id: str
    redirect_uri: str
    code_challenge: str
    scope: str
    nonce: str | None
    amr: tuple[str, ...]
    expires_at: datetime
    used_at: datetime | None


async def auth_code(conn: AsyncConnection[Any], code_hash: str) -> AuthCode | None:
    rows = await fetch_rows(
        conn,
        "SELECT user_id, client_id, redirect_uri, code_challenge, scope, nonce, amr,"
        " expires_at, used_at FROM auth_codes WHERE code_hash = %s",
        (code_hash,),
    )
    if not rows:
        return None
    r = rows[0]
    args = list(r)
    args[6] = tuple(args[6])
    return AuthCode(*args)


@dataclass(frozen=True, slots=True)
class DeviceGrant:
    device_id: str
    user_code: str
    client_id: str
    scope: str
    interval_s: int
    status: str
    user_id: str | None
    expires_at: datetime


_GRANT = "device_id, user_code, client_id, scope, interval_s, status, user_id, expires_at"


async def device_grant_by_code(conn: AsyncConnection[Any], code_hash: str) -> DeviceGrant | None:
    rows = await fetch_rows(
        conn, f"SELECT {_GRANT} FROM device_grants WHERE device_code_hash = %s", (code_hash,)
    )
    return DeviceGrant(*rows[0]) if rows else None


async def pending_device_grant(conn: AsyncConnection[Any], user_code: str) -> DeviceGrant | None:
    rows = await fetch_rows(
        conn,
        f"SELECT {_GRANT} FROM device_grants WHERE user_code = %s AND status = 'pending'"
        " AND expires_at > now() ORDER BY created_at DESC LIMIT 1",
        (user_code,),
    )
    return DeviceGrant(*rows[0]) if rows else None


async def revocations_since(
    conn: AsyncConnection[Any], seq: int, since: datetime
) -> list[tuple[int, str | None, str | None, datetime | None]]:
    """(seq, family_id, user_id, valid_after) appended after ``seq`` and newer than ``since``."""
    rows = await fetch_rows(
        conn,
        "SELECT seq, family_id, user_id, valid_after FROM token_revocations"
        " WHERE seq > %s AND at > %s ORDER BY seq",
        (seq, since),
    )
    return [(r[0], r[1], r[2], r[3]) for r in rows]
