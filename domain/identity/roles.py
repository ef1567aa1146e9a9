"""Roles and the scopes they grant.

A token carries scopes, and every endpoint asks for one scope; roles only decide which
scopes a user's tokens may hold. The three roles nest (user ⊂ support ⊂ admin) so a
grant never takes anything away. Support staff read accounts, audit and analytics to
answer tickets; every write that affects other users or the whole service (locking
accounts, granting roles, catalog, ranking, experiment and rate-limit changes) is admin
only.

Roles read back from stored events may include ones this code does not know (a newer
version wrote them); ``scopes_for`` ignores them, which grants nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

USER = "user"
SUPPORT = "support"
ADMIN = "admin"
ROLES: tuple[str, ...] = (USER, SUPPORT, ADMIN)

SCOPES: Mapping[str, str] = MappingProxyType(
    {
        "profile": "your account, profiles, sessions and API keys",
        "playback": "read and write your playback positions",
        "library": "your watchlist, history, ratings, services and settings, and sync",
        "search": "search and browse the catalog",
        "users:read": "read other users' accounts",
        "audit:read": "read the audit log",
        "analytics:read": "read usage analytics",
        "users:write": "lock and unlock accounts, revoke sessions, grant roles",
        "catalog:write": "add content and administer webhooks",
        "moderation:read": "read the catalog moderation queue and its history",
        "moderation:write": "decide on titles in the moderation queue: approve, edit, hide",
        "ranking:write": "change search ranking profiles",
        "experiments:write": "define, start and stop A/B experiments",
        "ratelimits:write": "change rate limits",
        "notifications:write": "send a notification to every user",
        "ops:read": "read operator state: projection rebuilds, dead letters",
        "ops:write": "decide on dead letters (skip them)",
    }
)
ALL_SCOPES: frozenset[str] = frozenset(SCOPES)

_USER_SCOPES = frozenset({"profile", "playback", "library", "search"})
_SUPPORT_SCOPES = _USER_SCOPES | {"users:read", "audit:read", "analytics:read", "moderation:read"}

ROLE_SCOPES: dict[str, frozenset[str]] = {
    USER: _USER_SCOPES,
    SUPPORT: _SUPPORT_SCOPES,
    ADMIN: ALL_SCOPES,
}


def valid_role(role: str) -> bool:
    return role in ROLE_SCOPES


def scopes_for(roles: Iterable[str]) -> frozenset[str]:
    """Every scope the roles grant together; unknown roles grant nothing."""
    granted: frozenset[str] = frozenset()
    for role in roles:
        granted |= ROLE_SCOPES.get(role, frozenset())
    return granted


def parse_scopes(text: str) -> frozenset[str]:
    """A space-separated ``scope`` parameter as a set; ValueError names unknown scopes."""
    requested = frozenset(text.split())
    unknown = requested - ALL_SCOPES
    if unknown:
        raise ValueError(
            f"unknown scope(s): {', '.join(sorted(unknown))};"
            f" known scopes: {', '.join(sorted(ALL_SCOPES))}"
        )
    return requested
