"""What an account owns besides its credentials: API keys, viewing profiles, the PIN.

Handlers called by the identity projector inside its batch transaction, and the queries
the API reads. Every query takes the owner's user id: a key or profile id of another
account is simply not found (the API answers 404, never someone else's data).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from projections.base import Envelope, fetch_rows

Outcome = tuple[str, dict[str, Any]] | None
OK: Outcome = ("ok", {})
MAX_PROFILES = 8


async def _key_issued(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    cur = await conn.execute(
        "INSERT INTO api_keys (key_id, user_id, prefix, secret_hash, name, scopes, created_at,"
        " expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (
            p["key_id"],
            p["user_id"],
            p["prefix"],
            p["secret_hash"],
            p["name"],
            list(p["scopes"]),
            at,
            p["expires_at"],
        ),
    )
    return OK if cur.rowcount == 1 else ("conflict", {"field": "prefix"})


async def _key_revoked(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    cur = await conn.execute(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, %s)"
        " WHERE key_id = %s AND user_id = %s",
        (at, p["key_id"], p["user_id"]),
    )
    return OK if cur.rowcount == 1 else ("invalid", {"field": "key_id"})


async def _profile_created(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    count = await fetch_rows(
        conn, "SELECT count(*) FROM profiles WHERE user_id = %s", (p["user_id"],)
    )
    if count[0][0] >= MAX_PROFILES:
        return ("limit", {"field": "profiles", "max": MAX_PROFILES})
    await conn.execute(
        "INSERT INTO profiles (profile_id, user_id, name, max_rating, kids, created_at,"
        " updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
        (p["profile_id"], p["user_id"], p["name"], p["max_rating"], p["kids"], at, at),
    )
    return OK


async def _profile_changed(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    if e.event_type == "ProfileUpdated":
        sql, args = "name = %s", (p["name"],)
    else:  # ParentalControlsSet
        sql, args = "max_rating = %s", (p["max_rating"],)
    cur = await conn.execute(
        f"UPDATE profiles SET {sql}, updated_at = %s WHERE profile_id = %s AND user_id = %s",
        (*args, at, p["profile_id"], p["user_id"]),
    )
    return OK if cur.rowcount == 1 else ("invalid", {"field": "profile_id"})


async def _profile_deleted(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    p = e.payload
    cur = await conn.execute(
        "DELETE FROM profiles WHERE profile_id = %s AND user_id = %s",
        (p["profile_id"], p["user_id"]),
    )
    return OK if cur.rowcount == 1 else ("invalid", {"field": "profile_id"})


async def _pin_set(conn: AsyncConnection[Any], e: Envelope, at: datetime) -> Outcome:
    await conn.execute(
        "UPDATE users SET parental_pin_hash = %s, updated_at = %s WHERE user_id = %s",
        (e.payload["pin_hash"], at, e.payload["user_id"]),
    )
    return OK


Handler = Callable[[AsyncConnection[Any], Envelope, datetime], Awaitable[Outcome]]
HANDLERS: dict[str, Handler] = {
    "ApiKeyIssued": _key_issued,
    "ApiKeyRevoked": _key_revoked,
    "ProfileCreated": _profile_created,
    "ProfileUpdated": _profile_changed,
    "ParentalControlsSet": _profile_changed,
    "ProfileDeleted": _profile_deleted,
    "ParentalPinSet": _pin_set,
}


# -- queries ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    user_id: str
    prefix: str
    secret_hash: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def public(self, last_used_at: str | None = None) -> dict[str, Any]:
        return {
            "id": self.key_id,
            "prefix": self.prefix,
            "name": self.name,
            "scopes": list(self.scopes),
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked": self.revoked_at is not None,
            "last_used_at": last_used_at,
        }


_KEY = "key_id, user_id, prefix, secret_hash, name, scopes, created_at, expires_at, revoked_at"


def _key(r: Sequence[Any]) -> ApiKey:
    args = list(r)
    args[5] = tuple(args[5])
    return ApiKey(*args)


async def api_key_by_prefix(conn: AsyncConnection[Any], prefix: str) -> ApiKey | None:
    rows = await fetch_rows(conn, f"SELECT {_KEY} FROM api_keys WHERE prefix = %s", (prefix,))
    return _key(rows[0]) if rows else None


async def api_keys_of(conn: AsyncConnection[Any], user_id: str) -> list[ApiKey]:
    rows = await fetch_rows(
        conn,
        f"SELECT {_KEY} FROM api_keys WHERE user_id = %s ORDER BY created_at DESC",
        (user_id,),
    )
    return [_key(r) for r in rows]


async def api_key_of(conn: AsyncConnection[Any], user_id: str, key_id: str) -> ApiKey | None:
    rows = await fetch_rows(
        conn, f"SELECT {_KEY} FROM api_keys WHERE key_id = %s AND user_id = %s", (key_id, user_id)
    )
    return _key(rows[0]) if rows else None


@dataclass(frozen=True, slots=True)
class Profile:
    profile_id: str
    user_id: str
    name: str
    max_rating: str | None
    kids: bool
    created_at: datetime

    def public(self) -> dict[str, Any]:
        return {
            "id": self.profile_id,
            "name": self.name,
            "max_rating": self.max_rating,
            "kids": self.kids,
            "created_at": self.created_at.isoformat(),
        }


_PROFILE = "profile_id, user_id, name, max_rating, kids, created_at"


async def profiles_of(conn: AsyncConnection[Any], user_id: str) -> list[Profile]:
    rows = await fetch_rows(
        conn,
        f"SELECT {_PROFILE} FROM profiles WHERE user_id = %s ORDER BY created_at, profile_id",
        (user_id,),
    )
    return [Profile(*r) for r in rows]


async def profile_of(conn: AsyncConnection[Any], user_id: str, profile_id: str) -> Profile | None:
    rows = await fetch_rows(
        conn,
        f"SELECT {_PROFILE} FROM profiles WHERE profile_id = %s AND user_id = %s",
        (profile_id, user_id),
    )
    return Profile(*rows[0]) if rows else None
