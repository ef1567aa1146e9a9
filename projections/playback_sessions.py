"""Streaming sessions read model (``playback_sessions``, ``stream_limits``).

A start is decided here, in log order, against the account's limit: past it, the session
is refused, so two devices starting at once cannot both squeeze under the limit and a
replay decides alike. Heartbeats keep a session alive; a session ends when its device
stops it or, three heartbeats missed, when the background sweeper appends its end. The
end is an event like any other, so the log alone says which streams ran when.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.events import Event
from core.ids import derived_id, utcnow
from core.topics import SESSIONS
from domain.playback import MISSED_HEARTBEATS
from projections.base import Envelope, PostgresOnly, RejectedEvent, Stores, fetch_rows
from projections.sweeper import Sweeper

_TYPES = frozenset(SESSIONS.event_types)


@dataclass(slots=True)
class _Session:
    user_id: str
    state: str
    last_heartbeat: datetime
    new: bool = False


class SessionsProjector(PostgresOnly):
    name = "sessions"
    topics: tuple[str, ...] = (SESSIONS.name,)
    tables: tuple[str, ...] = ("playback_sessions", "stream_limits")

    def check(self, event: Envelope) -> None:
        if event.event_type not in _TYPES:
            raise RejectedEvent(f"sessions does not handle {event.event_type}")
        p = event.payload
        if not p["user_id"] or event.key != p["user_id"]:
            raise RejectedEvent("user_id: must be non-empty and the record key")
        if event.event_type == "StreamLimitSet":
            if not 1 <= p["max_streams"] <= 100:
                raise RejectedEvent("max_streams: must be between 1 and 100")
        elif not p["session_id"]:
            raise RejectedEvent("session_id: must be non-empty")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        users = sorted({e.payload["user_id"] for e in batch})
        limits = dict(
            await fetch_rows(
                conn,
                "SELECT user_id, max_streams FROM stream_limits WHERE user_id = ANY(%s)",
                (users,),
            )
        )
        ids = sorted({e.payload["session_id"] for e in batch if "session_id" in e.payload})
        sessions: dict[str, _Session] = {}
        for sid, uid, state, beat in await fetch_rows(
            conn,
            "SELECT session_id, user_id, state, last_heartbeat FROM playback_sessions"
            " WHERE session_id = ANY(%s) OR (user_id = ANY(%s) AND state = 'active')",
            (ids, users),
        ):
            sessions[sid] = _Session(uid, state, beat)
        starts: list[tuple[Any, ...]] = []
        beats: dict[str, datetime] = {}
        ends: dict[str, tuple[str, datetime]] = {}
        new_limits: dict[str, int] = {}
        for e in batch:
            p = e.payload
            uid = p["user_id"]
            if e.event_type == "StreamLimitSet":
                limits[uid] = new_limits[uid] = p["max_streams"]
                continue
            sid = p["session_id"]
            s = sessions.get(sid)
            if e.event_type == "PlaybackSessionStarted":
                if s is not None:
                    continue  # a repeated start changes nothing
                active = sum(
                    1 for x in sessions.values() if x.user_id == uid and x.state == "active"
                )
                cap = limits.get(uid, p["default_max_streams"])
                state = "active" if active < cap else "refused"
                sessions[sid] = _Session(uid, state, p["occurred_at"], new=True)
                starts.append(
                    (sid, uid, p["device_id"], p["content_id"], p["heartbeat_s"],
                     p["occurred_at"], p["occurred_at"], state, p["auth_session"])
                )  # fmt: skip
            elif s is None or s.state != "active" or s.user_id != uid:
                continue  # a beat or end for a session that is not running: nothing to do
            elif e.event_type == "PlaybackSessionHeartbeat":
                s.last_heartbeat = max(s.last_heartbeat, p["occurred_at"])
                beats[sid] = s.last_heartbeat
            else:
                s.state = "ended"
                ends[sid] = (p["reason"], p["occurred_at"])
        async with conn.cursor() as cur:
            if new_limits:
                await cur.executemany(
                    "INSERT INTO stream_limits (user_id, max_streams) VALUES (%s, %s)"
                    " ON CONFLICT (user_id) DO UPDATE SET max_streams = EXCLUDED.max_streams",
                    list(new_limits.items()),
                )
            if starts:
                await cur.executemany(
                    "INSERT INTO playback_sessions (session_id, user_id, device_id, content_id,"
                    " heartbeat_s, started_at, last_heartbeat, state, auth_session)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    starts,
                )
            if beats:
                await cur.executemany(
                    "UPDATE playback_sessions SET last_heartbeat = %s WHERE session_id = %s",
                    [(at, sid) for sid, at in beats.items()],
                )
            if ends:
                await cur.executemany(
                    "UPDATE playback_sessions SET state = 'ended', end_reason = %s,"
                    " ended_at = %s WHERE session_id = %s",
                    [(reason, at, sid) for sid, (reason, at) in ends.items()],
                )

    def background(self, stores: Stores) -> Any:
        if stores.publisher is None:
            return None
        return SessionSweeper(stores.pg, stores.publisher)


class SessionSweeper(Sweeper):
    """Appends the end of every session whose device missed three heartbeats."""

    what = "session sweep"

    async def due(self, conn: AsyncConnection[Any]) -> list[Event]:
        rows = await fetch_rows(
            conn,
            "SELECT session_id, user_id FROM playback_sessions WHERE state = 'active'"
            " AND last_heartbeat + make_interval(secs => heartbeat_s * %s) < now()",
            (MISSED_HEARTBEATS,),
        )
        now = utcnow()
        return [
            Event(
                "PlaybackSessionEnded",
                uid,
                {"session_id": sid, "user_id": uid, "reason": "expired", "occurred_at": now},
                event_id=derived_id(f"expired:{sid}"),
                occurred_at=now,
                producer="sweeper",
            )
            for sid, uid in rows
        ]


@dataclass(frozen=True, slots=True)
class ActiveSession:
    session_id: str
    device_id: str
    content_id: str
    started_at: datetime
    last_heartbeat: datetime


async def session_state(pool: AsyncConnectionPool, session_id: str) -> tuple[str, str] | None:
    """(user id, state) of a session, or None when unknown."""
    async with pool.connection() as conn:
        rows = await fetch_rows(
            conn,
            "SELECT user_id, state FROM playback_sessions WHERE session_id = %s",
            (session_id,),
        )
    return (rows[0][0], rows[0][1]) if rows else None


async def active_sessions(pool: AsyncConnectionPool, user_id: str) -> list[ActiveSession]:
    async with pool.connection() as conn:
        rows = await fetch_rows(
            conn,
            "SELECT session_id, device_id, content_id, started_at, last_heartbeat"
            " FROM playback_sessions WHERE user_id = %s AND state = 'active'"
            " ORDER BY started_at",
            (user_id,),
        )
    return [ActiveSession(*r) for r in rows]
