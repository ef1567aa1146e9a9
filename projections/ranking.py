"""Ranking profiles read model: every version of every profile, ``ranking_profiles``.

The API decides a new version's number (the current one + 1) before it appends the
event; two writers can pick the same number. The first event with a given
(profile, version) in log order wins and later ones change nothing (ON CONFLICT DO
NOTHING on the primary key), so a replay decides the same way. The row keeps the
winner's event id, which is how the API tells a writer that lost.

"default" always exists: with no events it is the built-in ``DEFAULT_PROFILE``
(version 0); setting it stores version 1 and so on. Stored weights are read through
``effective_weights``, so profiles written by another code version (a weight added or
dropped, bounds changed) still come back complete and in bounds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from core.topics import RANKING
from domain.discovery.ranking import (
    DEFAULT_PROFILE,
    PROFILE_NAME,
    RankingProfile,
    effective_weights,
)
from projections.base import Envelope, PostgresOnly, RejectedEvent


class RankingProjector(PostgresOnly):
    name = "ranking"
    topics: tuple[str, ...] = (RANKING.name,)
    tables: tuple[str, ...] = ("ranking_profiles",)

    def check(self, event: Envelope) -> None:
        if event.event_type != "RankingProfileSet":
            raise RejectedEvent(f"ranking does not handle {event.event_type}")
        p = event.payload
        if not PROFILE_NAME.match(p["profile"]):
            raise RejectedEvent(f"profile: {p['profile']!r} is not a profile name")
        if event.key != p["profile"]:
            raise RejectedEvent("record key must be the profile name")
        if p["version"] < 1:
            raise RejectedEvent("version: must be 1 or more")
        # Structure only: names and bounds are applied when reading (effective_weights),
        # so a rule that changes later never makes an old event unreadable on replay.
        for key, value in p["weights"].items():
            if not math.isfinite(value):
                raise RejectedEvent(f"weights.{key}: must be a finite number")
        for text in (p["description"], p["set_by"] or "", *p["weights"]):
            if "\x00" in text:
                raise RejectedEvent("text must not contain NUL characters")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        # One partition, in offset order: the first event with a given version wins.
        rows = [
            (
                e.payload["profile"],
                e.payload["version"],
                Jsonb(e.payload["weights"]),
                e.payload["description"],
                e.payload["set_by"],
                e.happened_at,
                e.event_id,
            )
            for e in sorted(batch, key=lambda e: (e.partition, e.offset))
        ]
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO ranking_profiles"
                " (profile, version, weights, description, set_by, set_at, event_id)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (profile, version) DO NOTHING",
                rows,
            )


# -- queries -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProfileVersion:
    """One stored version (or the built-in default, version 0, with no set_at)."""

    profile: RankingProfile
    set_by: str | None
    set_at: datetime | None
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        p = self.profile
        return {
            "name": p.name,
            "version": p.version,
            "weights": dict(p.weights),
            "description": p.description,
            "set_by": self.set_by,
            "set_at": self.set_at.isoformat() if self.set_at else None,
        }


BUILT_IN = ProfileVersion(DEFAULT_PROFILE, None, None)
_COLUMNS = "profile, version, weights, description, set_by, set_at, event_id"


def _version(row: Sequence[Any]) -> ProfileVersion:
    name, version, weights, description, set_by, set_at, event_id = row
    raw: Mapping[str, object] = json.loads(weights) if isinstance(weights, str) else weights
    profile = RankingProfile(name, version, effective_weights(raw), description)
    return ProfileVersion(profile, set_by, set_at, event_id)


async def current_version(conn: AsyncConnection[Any], name: str) -> ProfileVersion | None:
    """The newest version of ``name``; the built-in one for an unset "default"."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM ranking_profiles WHERE profile = %s ORDER BY version DESC LIMIT 1",
        (name,),
    )
    row = await cur.fetchone()
    if row is not None:
        return _version(row)
    return BUILT_IN if name == DEFAULT_PROFILE.name else None


async def current_profile(conn: AsyncConnection[Any], name: str) -> RankingProfile | None:
    found = await current_version(conn, name)
    return found.profile if found else None


async def stored_version(
    conn: AsyncConnection[Any], name: str, version: int
) -> ProfileVersion | None:
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM ranking_profiles WHERE profile = %s AND version = %s",
        (name, version),
    )
    row = await cur.fetchone()
    return _version(row) if row is not None else None


async def profile_history(
    conn: AsyncConnection[Any], name: str, *, limit: int = 100, before: int | None = None
) -> list[ProfileVersion]:
    """Stored versions of ``name``, newest first; ``before`` is the last version seen.
    The built-in default (version 0) is not a stored version and is not listed."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS} FROM ranking_profiles"
        " WHERE profile = %s AND (%s::int IS NULL OR version < %s)"
        " ORDER BY version DESC LIMIT %s",
        (name, before, before, limit),
    )
    return [_version(r) for r in await cur.fetchall()]


async def list_profiles(conn: AsyncConnection[Any]) -> list[ProfileVersion]:
    """The current version of every profile, by name; "default" is always there."""
    cur = await conn.execute(
        f"SELECT DISTINCT ON (profile) {_COLUMNS} FROM ranking_profiles"
        " ORDER BY profile, version DESC"
    )
    found = [_version(r) for r in await cur.fetchall()]
    if all(v.profile.name != DEFAULT_PROFILE.name for v in found):
        found = sorted([*found, BUILT_IN], key=lambda v: v.profile.name)
    return found
