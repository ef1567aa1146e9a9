"""Identity read model: accounts, credentials, sessions, codes, API keys, profiles, audit.

One projector folds every event of ``identity.accounts`` (one partition, so log order is
total) in a single transaction per batch. It is where the identity rules that span keys
are decided, deterministically, from the events alone:

* one account per email, case-insensitively: the first registration wins;
* verification and reset tokens, authorization and device codes, backup codes and
  refresh tokens are spent once; a refresh token presented twice revokes its family;
* expiry is judged against the event's own time, never the clock, so a replay agrees.

For a command whose answer depends on such a rule, the projector writes the outcome under
the event id in ``identity_outcomes``; the API that appended the event reads it there.
Every event also becomes one audit row (projections/identity/audit.py) in the same
transaction. The handlers for sessions and grants live in projections/identity/sessions.py,
those for keys and profiles in projections/identity/account_data.py; this module holds
accounts and the dispatch.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from core.topics import IDENTITY
from projections.base import Envelope, PostgresOnly, RejectedEvent, fetch_rows
from projections.identity import account_data, audit, sessions

Outcome = tuple[str, dict[str, Any]] | None
Handler = Callable[[AsyncConnection[Any], Envelope, datetime], Awaitable[Outcome]]
OK: Outcome = ("ok", {})

#: handled by projections/identity/rate_limits.py; the audit row is still written here
_NOT_OURS = frozenset({"RateLimitRuleSet"})


def default_profile_id(user_id: str) -> str:
    """Every account starts with one profile whose id follows from the account's."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"mgw:profile:{user_id}"))


# -- accounts -------------------------------------------------------------------------


async def _registered(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    normalized = p["email"].strip().lower()
    taken = await fetch_rows(
        conn,
        "SELECT user_id FROM users WHERE email_normalized = %s OR user_id = %s",
        (normalized, p["user_id"]),
    )
    if taken:
        return ("conflict", {"field": "email"})
    roles = sorted({"user", *p["roles"]})
    await conn.execute(
        "INSERT INTO users (user_id, email, email_normalized, display_name, password_hash,"
        " email_verified, source, roles, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            p["user_id"],
            p["email"],
            normalized,
            p["display_name"],
            p["password_hash"],
            p["email_verified"],
            p["source"],
            roles,
            at,
            at,
        ),
    )
    await conn.execute(
        "INSERT INTO profiles (profile_id, user_id, name, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (profile_id) DO NOTHING",
        (default_profile_id(p["user_id"]), p["user_id"], p["display_name"][:64], at, at),
    )
    return OK


async def _token_usable(
    conn: AsyncConnection[Any], token_hash: str, user_id: str, purpose: str, at: datetime
) -> tuple[bool, str | None]:
    rows = await fetch_rows(
        conn,
        "SELECT user_id, expires_at, used_at, email FROM email_tokens"
        " WHERE token_hash = %s AND purpose = %s",
        (token_hash, purpose),
    )
    if not rows:
        return False, None
    owner, expires_at, used_at, email = rows[0]
    return owner == user_id and used_at is None and at < expires_at, email


async def _email_token(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    purpose = "verify" if e.event_type == "EmailVerificationRequested" else "reset"
    await conn.execute(
        "INSERT INTO email_tokens (token_hash, user_id, purpose, email, created_at, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (token_hash) DO NOTHING",
        (p["token_hash"], p["user_id"], purpose, p.get("email"), at, p["expires_at"]),
    )
    return OK


async def _verified(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    if p["token_hash"] is not None:
        usable, email = await _token_usable(conn, p["token_hash"], p["user_id"], "verify", at)
        if not usable:
            return ("invalid", {"field": "token"})
        current = await fetch_rows(
            conn, "SELECT email_normalized FROM users WHERE user_id = %s", (p["user_id"],)
        )
        # a link mailed to an address the account no longer has proves nothing
        if not current or (email or "").lower() != current[0][0]:
            return ("invalid", {"field": "token"})
        await conn.execute(
            "UPDATE email_tokens SET used_at = %s WHERE token_hash = %s", (at, p["token_hash"])
        )
    await conn.execute(
        "UPDATE users SET email_verified = true, updated_at = %s WHERE user_id = %s",
        (at, p["user_id"]),
    )
    return OK


async def _password_changed(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    if p["reason"] == "rehash" and p.get("previous_hash"):
        # a rehash only upgrades the hash it was computed from: after a reset or a
        # change it would bring the old password back
        cur = await conn.execute(
            "UPDATE users SET password_hash = %s, updated_at = %s"
            " WHERE user_id = %s AND password_hash = %s",
            (p["password_hash"], at, p["user_id"], p["previous_hash"]),
        )
        return OK if cur.rowcount == 1 else ("stale", {})
    await conn.execute(
        "UPDATE users SET password_hash = %s, updated_at = %s WHERE user_id = %s",
        (p["password_hash"], at, p["user_id"]),
    )
    return OK


async def _reset_completed(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    usable, _ = await _token_usable(conn, p["token_hash"], p["user_id"], "reset", at)
    if not usable:
        return ("invalid", {"field": "token"})
    # every outstanding reset link dies with the one spent
    await conn.execute(
        "UPDATE email_tokens SET used_at = %s"
        " WHERE user_id = %s AND purpose = 'reset' AND used_at IS NULL",
        (at, p["user_id"]),
    )
    # following the mailed link proved the email, as a verification link would
    await conn.execute(
        "UPDATE users SET password_hash = %s, email_verified = true, updated_at = %s"
        " WHERE user_id = %s",
        (p["password_hash"], at, p["user_id"]),
    )
    await sessions.revoke_all(conn, p["user_id"], at, "password_reset")
    return OK


async def _mfa_enabled(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    await conn.execute(
        "UPDATE users SET mfa_secret_sealed = %s, mfa_enabled_at = %s, updated_at = %s"
        " WHERE user_id = %s",
        (p["secret_sealed"], at, at, p["user_id"]),
    )
    await _replace_backup_codes(conn, p["user_id"], p["backup_code_hashes"])
    return OK


async def _replace_backup_codes(
    conn: AsyncConnection[Any], user_id: str, hashes: Sequence[str]
) -> None:
    await conn.execute("DELETE FROM backup_codes WHERE user_id = %s", (user_id,))
    if hashes:
        await conn.execute(
            "INSERT INTO backup_codes (user_id, code_hash)"
            " SELECT %s, h FROM unnest(%s::text[]) AS h ON CONFLICT DO NOTHING",
            (user_id, list(hashes)),
        )


async def _mfa_disabled(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    user_id = e.payload["user_id"]
    await conn.execute(
        "UPDATE users SET mfa_secret_sealed = NULL, mfa_enabled_at = NULL, updated_at = %s"
        " WHERE user_id = %s",
        (at, user_id),
    )
    await _replace_backup_codes(conn, user_id, [])
    return OK


async def _backup_codes(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    await _replace_backup_codes(conn, e.payload["user_id"], e.payload["backup_code_hashes"])
    return OK


async def _backup_code_used(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    cur = await conn.execute(
        "UPDATE backup_codes SET used_at = %s"
        " WHERE user_id = %s AND code_hash = %s AND used_at IS NULL",
        (at, e.payload["user_id"], e.payload["code_hash"]),
    )
    return OK if cur.rowcount == 1 else ("invalid", {"field": "backup_code"})


async def _login_succeeded(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    await conn.execute(
        "UPDATE users SET last_login_at = %s WHERE user_id = %s", (at, e.payload["user_id"])
    )
    return OK


async def _locked(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    user_id = e.payload["user_id"]
    await conn.execute(
        "UPDATE users SET locked = true, locked_reason = %s, updated_at = %s WHERE user_id = %s",
        (e.payload["reason"], at, user_id),
    )
    await sessions.revoke_all(conn, user_id, at, "locked")
    return OK


async def _unlocked(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    await conn.execute(
        "UPDATE users SET locked = false, locked_reason = NULL, updated_at = %s WHERE user_id = %s",
        (at, e.payload["user_id"]),
    )
    return OK


async def _role(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    if e.event_type == "RoleGranted":
        sql = (
            "UPDATE users SET roles = (SELECT array_agg(DISTINCT r ORDER BY r)"
            " FROM unnest(array_append(roles, %s)) AS r), updated_at = %s WHERE user_id = %s"
        )
    elif p["role"] == "user":
        return ("invalid", {"field": "role"})  # every account keeps the user role
    else:
        sql = "UPDATE users SET roles = array_remove(roles, %s), updated_at = %s WHERE user_id = %s"
    await conn.execute(sql, (p["role"], at, p["user_id"]))
    # tokens carry roles: the ones issued before the change must be refreshed
    await sessions.invalidate_access_tokens(conn, p["user_id"], at)
    return OK


async def _external_linked(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    rows = await fetch_rows(
        conn,
        "SELECT user_id FROM external_identities WHERE provider = %s AND subject = %s",
        (p["provider"], p["subject"]),
    )
    if rows:
        return OK if rows[0][0] == p["user_id"] else ("conflict", {"field": "subject"})
    await conn.execute(
        "INSERT INTO external_identities (provider, subject, user_id, email, linked_at)"
        " VALUES (%s, %s, %s, %s, %s)",
        (p["provider"], p["subject"], p["user_id"], p["email"], at),
    )
    return OK


async def _ignored(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    return OK


HANDLERS: dict[str, Handler] = {
    "UserRegistered": _registered,
    "EmailVerificationRequested": _email_token,
    "EmailVerified": _verified,
    "PasswordChanged": _password_changed,
    "PasswordResetRequested": _email_token,
    "PasswordResetCompleted": _reset_completed,
    "MfaEnabled": _mfa_enabled,
    "MfaDisabled": _mfa_disabled,
    "BackupCodesRegenerated": _backup_codes,
    "BackupCodeUsed": _backup_code_used,
    "LoginSucceeded": _login_succeeded,
    "LoginFailed": _ignored,
    "UserLocked": _locked,
    "UserUnlocked": _unlocked,
    "RoleGranted": _role,
    "RoleRevoked": _role,
    "ExternalIdentityLinked": _external_linked,
    "RateLimitRuleSet": _ignored,
    **sessions.HANDLERS,
    **account_data.HANDLERS,
}

# Events whose user_id may be null (no account matched, or not about one account).
_NO_USER = frozenset({"LoginFailed", "DeviceAuthorizationStarted", "RateLimitRuleSet"})


class IdentityProjector(PostgresOnly):
    name = "identity"
    topics: tuple[str, ...] = (IDENTITY.name,)
    tables: tuple[str, ...] = (
        "users",
        "identity_outcomes",
        "email_tokens",
        "backup_codes",
        "sessions",
        "refresh_tokens",
        "token_revocations",
        "auth_codes",
        "device_grants",
        "api_keys",
        "profiles",
        "external_identities",
        "audit_log",
    )

    def check(self, event: Envelope) -> None:
        if event.event_type not in HANDLERS:
            raise RejectedEvent(f"identity does not handle {event.event_type}")
        p = event.payload
        if event.event_type not in _NO_USER and not p.get("user_id"):
            raise RejectedEvent("user_id must be non-empty")
        for value in p.values():
            if isinstance(value, str) and "\x00" in value:
                raise RejectedEvent("text must not contain NUL characters")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        outcomes: list[tuple[str, str, Jsonb, datetime]] = []
        rows: list[tuple[Any, ...]] = []
        for e in sorted(batch, key=lambda e: e.offset):
            at = e.happened_at
            result = await HANDLERS[e.event_type](conn, e, at)
            outcome, detail = result if result is not None else ("ok", {})
            if e.event_id and e.event_type not in _NOT_OURS:
                outcomes.append((e.event_id, outcome, Jsonb(detail), at))
            rows.append(audit.row(e, at, outcome))
        async with conn.cursor() as cur:
            if outcomes:
                await cur.executemany(
                    "INSERT INTO identity_outcomes (event_id, outcome, detail, at)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (event_id) DO NOTHING",
                    outcomes,
                )
            await cur.executemany(audit.INSERT, rows)


# -- queries -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    email: str
    display_name: str
    password_hash: str | None
    email_verified: bool
    roles: tuple[str, ...]
    locked: bool
    mfa_secret_sealed: str | None
    parental_pin_hash: str | None
    created_at: datetime
    last_login_at: datetime | None
    source: str

    def public(self) -> dict[str, Any]:
        return {
            "id": self.user_id,
            "email": self.email,
            "display_name": self.display_name,
            "email_verified": self.email_verified,
            "roles": list(self.roles),
            "locked": self.locked,
            "mfa_enabled": self.mfa_secret_sealed is not None,
            "created_at": self.created_at.isoformat(),
            "last_login_at": self.last_login_at.isoformat() if self.last_login_at else None,
        }


_USER_COLUMNS = (
    "user_id, email, display_name, password_hash, email_verified, roles, locked,"
    " mfa_secret_sealed, parental_pin_hash, created_at, last_login_at, source"
)


def _user(row: Sequence[Any]) -> User:
    args = list(row)
    args[5] = tuple(args[5])
    return User(*args)


async def user_by_email(conn: AsyncConnection[Any], email: str) -> User | None:
    rows = await fetch_rows(
        conn,
        f"SELECT {_USER_COLUMNS} FROM users WHERE email_normalized = %s",
        (email.strip().lower(),),
    )
    return _user(rows[0]) if rows else None


async def user_by_id(conn: AsyncConnection[Any], user_id: str) -> User | None:
    rows = await fetch_rows(
        conn, f"SELECT {_USER_COLUMNS} FROM users WHERE user_id = %s", (user_id,)
    )
    return _user(rows[0]) if rows else None


async def search_users(
    conn: AsyncConnection[Any], q: str, *, limit: int, after: str | None
) -> list[User]:
    """Admin search: by email or display name, substring and similarity (pg_trgm)."""
    pattern = "%" + q.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = await fetch_rows(
        conn,
        f"SELECT {_USER_COLUMNS} FROM users"
        " WHERE (%s = '' OR (email_normalized || ' ' || lower(display_name)) LIKE %s"
        " OR user_id = %s)"
        " AND (%s::text IS NULL OR user_id > %s) ORDER BY user_id LIMIT %s",
        (q, pattern, q, after, after, limit),
    )
    return [_user(r) for r in rows]


async def outcome_of(
    conn: AsyncConnection[Any], event_id: str
) -> tuple[str, dict[str, Any]] | None:
    rows = await fetch_rows(
        conn, "SELECT outcome, detail FROM identity_outcomes WHERE event_id = %s", (event_id,)
    )
    return (rows[0][0], rows[0][1] or {}) if rows else None


async def external_link(conn: AsyncConnection[Any], provider: str, subject: str) -> str | None:
    rows = await fetch_rows(
        conn,
        "SELECT user_id FROM external_identities WHERE provider = %s AND subject = %s",
        (provider, subject),
    )
    return str(rows[0][0]) if rows else None


async def email_token(
    conn: AsyncConnection[Any], token_hash: str, purpose: str
) -> tuple[str, datetime, datetime | None] | None:
    """(user_id, expires_at, used_at) of a verification or reset token."""
    rows = await fetch_rows(
        conn,
        "SELECT user_id, expires_at, used_at FROM email_tokens"
        " WHERE token_hash = %s AND purpose = %s",
        (token_hash, purpose),
    )
    return (rows[0][0], rows[0][1], rows[0][2]) if rows else None


async def unused_backup_code(conn: AsyncConnection[Any], user_id: str, code_hash: str) -> bool:
    rows = await fetch_rows(
        conn,
        "SELECT 1 FROM backup_codes WHERE user_id = %s AND code_hash = %s AND used_at IS NULL",
        (user_id, code_hash),
    )
    return bool(rows)


async def backup_codes_left(conn: AsyncConnection[Any], user_id: str) -> int:
    rows = await fetch_rows(
        conn,
        "SELECT count(*) FROM backup_codes WHERE user_id = %s AND used_at IS NULL",
        (user_id,),
    )
    return int(rows[0][0])
