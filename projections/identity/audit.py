"""The audit log: one row per identity event, written by the identity projector.

A row says who (actor), did what (the event type), to whom (target), from where (ip,
user agent), when, and how it ended (the projector's outcome). ``detail`` is built from an
allow-list of fields per event type, so password hashes, token hashes, sealed secrets and
backup codes can never reach it, whatever a later schema adds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from projections.base import Envelope, fetch_rows

#: fields of each event type that may appear in an audit row's detail
SAFE_FIELDS: dict[str, tuple[str, ...]] = {
    "UserRegistered": ("email", "display_name", "source", "email_verified", "roles"),
    "EmailVerificationRequested": ("email",),
    "EmailVerified": ("email",),
    "PasswordChanged": ("reason",),
    "SessionStarted": ("family_id", "client_id", "method", "amr", "scope", "device_name"),
    "RefreshTokenRotated": ("family_id",),
    "SessionRevoked": ("family_id", "reason"),
    "DeviceRenamed": ("family_id", "device_name"),
    "SessionsRevoked": ("reason",),
    "LoginSucceeded": ("method", "client_id"),
    "LoginFailed": ("email", "reason"),
    "UserLocked": ("reason",),
    "RoleGranted": ("role",),
    "RoleRevoked": ("role",),
    "ApiKeyIssued": ("key_id", "prefix", "name", "scopes"),
    "ApiKeyRevoked": ("key_id",),
    "ProfileCreated": ("profile_id", "name", "max_rating", "kids"),
    "ProfileUpdated": ("profile_id", "name"),
    "ProfileDeleted": ("profile_id",),
    "ParentalControlsSet": ("profile_id", "max_rating"),
    "AuthorizationCodeIssued": ("client_id", "redirect_uri", "scope"),
    "DeviceAuthorizationStarted": ("device_id", "client_id", "scope"),
    "DeviceAuthorizationApproved": ("device_id",),
    "DeviceAuthorizationDenied": ("device_id",),
    "ExternalIdentityLinked": ("provider", "email"),
    "RateLimitRuleSet": ("rule", "limit", "period_s"),
}

INSERT = (
    "INSERT INTO audit_log (log_offset, at, action, outcome, actor_id, target_id, ip,"
    " user_agent, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
    " ON CONFLICT (log_offset) DO NOTHING"
)


def row(e: Envelope, at: datetime, outcome: str) -> tuple[Any, ...]:
    p = e.payload
    detail = {k: p[k] for k in SAFE_FIELDS.get(e.event_type, ()) if p.get(k) is not None}
    target = p.get("user_id") or p.get("device_id") or p.get("rule")
    return (
        e.offset,
        at,
        e.event_type,
        outcome,
        p.get("actor_id") or p.get("user_id"),
        target,
        p.get("ip"),
        (p.get("user_agent") or "")[:256] or None,
        Jsonb(detail),
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    offset: int
    at: datetime
    action: str
    outcome: str
    actor_id: str | None
    target_id: str | None
    ip: str | None
    user_agent: str | None
    detail: dict[str, Any]

    def public(self) -> dict[str, Any]:
        return {
            "id": self.offset,
            "at": self.at.isoformat(),
            "action": self.action,
            "outcome": self.outcome,
            "actor_id": self.actor_id,
            "target_id": self.target_id,
            "ip": self.ip,
            "user_agent": self.user_agent,
            "detail": self.detail,
        }


async def entries(
    conn: AsyncConnection[Any],
    *,
    target_id: str | None = None,
    action: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> list[AuditEntry]:
    """Newest first; ``before`` is the id of the last entry of the previous page."""
    rows: Sequence[Any] = await fetch_rows(
        conn,
        "SELECT log_offset, at, action, outcome, actor_id, target_id, ip, user_agent, detail"
        " FROM audit_log WHERE (%s::text IS NULL OR target_id = %s OR actor_id = %s)"
        " AND (%s::text IS NULL OR action = %s) AND (%s::bigint IS NULL OR log_offset < %s)"
        " ORDER BY log_offset DESC LIMIT %s",
        (target_id, target_id, target_id, action, action, before, before, limit),
    )
    return [AuditEntry(*r) for r in rows]
