"""Library read model: watchlist, history, ratings, services, settings and up-next hides,
and the per-user change feed devices sync from.

``library_items`` is both the state and the feed: one row per (user, entity, key) with
the user's change counter (``seq``) at its last visible change, so "what changed after
cursor N" is one index range, and a removal is a row too (a tombstone) that syncs like
any other change. Watchlist and history are observed-remove sets over ``library_tags``;
ratings, services and settings are last-writer-wins registers on the op's HLC stamp.

A batch is folded in memory (one read of the rows it touches, one write of each), in
log order. A user's events live in one partition, so a replay folds them in the same
order and hands out the same ``seq`` numbers: cursors survive a rebuild.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from psycopg import AsyncConnection

from core.backoff import pause
from core.fanout import Push
from core.ids import iso_z, utcnow
from core.topics import LIBRARY
from domain.library import (
    OPS,
    RATING_MAX,
    RATING_MIN,
    SET_ENTITIES,
    TOMBSTONE_DAYS,
    remover_saw,
)
from domain.sync.hlc import Stamp
from projections.base import Envelope, PostgresOnly, RejectedEvent, Stores, fetch_rows

log = logging.getLogger("mgw.library")

#: event type -> entity
ENTITY_OF: dict[str, str] = {event_type: entity for entity, event_type in OPS.values()}
_ADDS = frozenset({"WatchlistItemAdded", "WatchRecorded"})
_REMOVES = frozenset({"WatchlistItemRemoved", "WatchesRemoved"})
_NO_CONTENT = frozenset({"ServicesSet", "LibrarySettingsSet"})
_TYPES = frozenset(LIBRARY.event_types)


@dataclass(slots=True)
class _Tag:
    tag: str
    stamp: str
    seq: int
    at: datetime
    device_id: str
    removed: bool = False
    new: bool = False


@dataclass(slots=True)
class _Item:
    seq: int
    deleted: bool
    value: Any
    stamp: str
    op_id: str
    device_id: str
    changed_at: datetime
    dirty: bool = False


@dataclass(slots=True)
class _User:
    seq: int = 0
    activity: dict[str, int] = field(default_factory=dict)
    dirty: bool = False


def _columns(rows: Sequence[tuple[Any, ...]], n: int) -> list[list[Any]]:
    """Rows as ``n`` column lists, for one ``unnest`` over arrays."""
    return [list(c) for c in zip(*rows, strict=True)] if rows else [[] for _ in range(n)]


def _set_value(entity: str, live: list[_Tag]) -> Any:
    """What a device sees of an observed-remove element: None when absent."""
    if not live:
        return None
    if entity == "watchlist":
        return {"added_at": iso_z(min(t.at for t in live))}
    watched = sorted(t.at for t in live)
    return {
        "plays": len(watched),
        "first_watched_at": iso_z(watched[0]),
        "last_watched_at": iso_z(watched[-1]),
    }


def _register_value(event_type: str, p: dict[str, Any]) -> Any:
    if event_type == "RatingSet":
        return {"rating": p["rating"]}
    if event_type == "ServicesSet":
        return {
            "region": p["region"],
            "platforms": list(p["platforms"]),
            "offer_types": list(p["offer_types"]),
        }
    if event_type == "LibrarySettingsSet":
        return {k: p[k] for k in ("min_resume_pct", "watched_pct", "min_play_s")}
    if event_type == "UpNextHidden":
        return {"hidden": True}
    return None  # RatingRemoved: a tombstone


class LibraryProjector(PostgresOnly):
    name = "library"
    topics: tuple[str, ...] = (LIBRARY.name,)
    tables: tuple[str, ...] = ("library_items", "library_tags", "library_ops", "library_users")
    #: the purge horizon moves with the clock, not with the log
    checksum_columns = {"library_users": ("user_id", "seq", "activity")}

    def check(self, event: Envelope) -> None:
        if event.event_type not in _TYPES:
            raise RejectedEvent(f"library does not handle {event.event_type}")
        p = event.payload
        for name in ("user_id", "op_id", "device_id", "stamp"):
            if not p[name] or "\x00" in p[name]:
                raise RejectedEvent(f"{name}: must be non-empty text")
        if event.key != p["user_id"]:
            raise RejectedEvent("record key must be the user id")
        if event.event_type not in _NO_CONTENT and not p["content_id"]:
            raise RejectedEvent("content_id: must be non-empty")
        if event.event_type == "RatingSet" and not RATING_MIN <= p["rating"] <= RATING_MAX:
            raise RejectedEvent(f"rating: must be between {RATING_MIN} and {RATING_MAX}")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> list[FeedMoved]:
        users_in = sorted({e.payload["user_id"] for e in batch})
        keys = {
            (e.payload["user_id"], ENTITY_OF[e.event_type], e.payload.get("content_id") or "")
            for e in batch
        }
        ops = {(e.payload["user_id"], e.payload["op_id"]) for e in batch}
        k_users, k_entities, k_keys = (list(c) for c in zip(*keys, strict=True))

        # claim the batch's op ids first: the ones already there are repeats (one statement
        # instead of a read now and a write later)
        fresh = {
            (r[0], r[1])
            for r in await fetch_rows(
                conn,
                "INSERT INTO library_ops (user_id, op_id) SELECT * FROM unnest(%b::text[],"
                " %b::text[]) ON CONFLICT DO NOTHING RETURNING user_id, op_id",
                ([u for u, _ in ops], [o for _, o in ops]),
            )
        }
        seen_ops = ops - fresh
        users: dict[str, _User] = {u: _User() for u in users_in}
        for uid, seq, activity in await fetch_rows(
            conn,
            "SELECT user_id, seq, activity FROM library_users WHERE user_id = ANY(%s)",
            (users_in,),
        ):
            users[uid] = _User(seq, dict(activity))
        before = {u: s.seq for u, s in users.items()}
        items: dict[tuple[str, str, str], _Item] = {}
        for r in await fetch_rows(
            conn,
            "SELECT i.user_id, i.entity, i.key, i.seq, i.deleted, i.value, i.stamp, i.op_id,"
            " i.device_id, i.changed_at FROM library_items i"
            " JOIN unnest(%b::text[], %b::text[], %b::text[]) AS t(u, e, k)"
            " ON i.user_id = t.u AND i.entity = t.e AND i.key = t.k",
            (k_users, k_entities, k_keys),
        ):
            items[(r[0], r[1], r[2])] = _Item(*r[3:])
        tags: dict[tuple[str, str, str], dict[str, _Tag]] = {}
        set_keys = [k for k in keys if k[1] in SET_ENTITIES]
        if set_keys:
            for r in await fetch_rows(
                conn,
                "SELECT g.user_id, g.entity, g.key, g.tag, g.stamp, g.seq, g.at, g.device_id"
                " FROM library_tags g JOIN unnest(%b::text[], %b::text[], %b::text[])"
                " AS t(u, e, k) ON g.user_id = t.u AND g.entity = t.e AND g.key = t.k"
                " WHERE NOT g.removed",
                ([k[0] for k in set_keys], [k[1] for k in set_keys], [k[2] for k in set_keys]),
            ):
                tags.setdefault((r[0], r[1], r[2]), {})[r[3]] = _Tag(*r[3:])

        applied = 0
        removed_tags: list[tuple[str, str, str, str]] = []
        for e in batch:
            p = e.payload
            uid, op_id = p["user_id"], p["op_id"]
            if (uid, op_id) in seen_ops:
                continue  # a repeated op (retry, duplicate send) changes nothing
            seen_ops.add((uid, op_id))
            user = users[uid]
            entity = ENTITY_OF[e.event_type]
            key = (uid, entity, p.get("content_id") or "")
            item = items.get(key)
            stamp, device = p["stamp"], p["device_id"]
            at = e.happened_at
            changed: tuple[bool, Any] | None = None  # (deleted, value) when visible
            if entity in SET_ENTITIES:
                element = tags.setdefault(key, {})
                if e.event_type in _ADDS:
                    when = (
                        p["watched_at"]
                        if e.event_type == "WatchRecorded"
                        else datetime.fromtimestamp(Stamp.decode(stamp).wall_ms / 1000, UTC)
                    )  # when the device says it happened
                    element[op_id] = _Tag(op_id, stamp, user.seq, when, device, new=True)
                else:
                    for t in element.values():
                        if not t.removed and remover_saw(
                            t.seq, t.device_id, t.stamp, seen=p["seen"], device=device,
                            stamp=stamp,
                        ):  # fmt: skip
                            t.removed = True
                            if not t.new:
                                removed_tags.append((*key, t.tag))
                value = _set_value(entity, [t for t in element.values() if not t.removed])
                deleted = value is None
                if item is None or item.deleted != deleted or item.value != value:
                    changed = (deleted, value)
                    if e.event_type in _ADDS:
                        element[op_id].seq = user.seq + 1  # stored with the change it made
            else:
                value = _register_value(e.event_type, p)
                if item is None or (stamp, op_id) > (item.stamp, item.op_id):
                    changed = (value is None, value)
                    if item is not None and item.deleted == changed[0] and item.value == value:
                        # same state, newer write: the stamp moves, the feed does not
                        item.stamp, item.op_id, item.dirty = stamp, op_id, True
                        changed = None
            if changed is not None:
                user.seq += 1
                user.activity[entity] = int(at.timestamp() * 1000)
                user.dirty = True
                items[key] = _Item(
                    user.seq, changed[0], changed[1], stamp, op_id, device, at, dirty=True
                )
            applied += 1

        if applied:
            # one statement per table over arrays: a batch of 500 ops is five statements,
            # not 1,500 (executemany runs one per row, and PostgreSQL pays for each)
            tag_rows = [
                (k[0], k[1], k[2], t.tag, t.stamp, t.seq, t.at, t.device_id, t.removed)
                for k, element in tags.items()
                for t in element.values()
                if t.new
            ]
            if tag_rows:
                await conn.execute(
                    "INSERT INTO library_tags (user_id, entity, key, tag, stamp, seq, at,"
                    " device_id, removed) SELECT * FROM unnest(%b::text[], %b::text[],"
                    " %b::text[], %b::text[], %b::text[], %b::bigint[], %b::timestamptz[],"
                    " %b::text[], %b::bool[]) ON CONFLICT DO NOTHING",
                    _columns(tag_rows, 9),
                )
            if removed_tags:
                await conn.execute(
                    "UPDATE library_tags g SET removed = TRUE FROM unnest(%b::text[],"
                    " %b::text[], %b::text[], %b::text[]) AS t(u, e, k, tag)"
                    " WHERE g.user_id = t.u AND g.entity = t.e AND g.key = t.k"
                    " AND g.tag = t.tag",
                    _columns(removed_tags, 4),
                )
            item_rows = [
                (*k, i.seq, i.deleted, json.dumps(i.value) if i.value is not None else None,
                 i.stamp, i.op_id, i.device_id, i.changed_at)
                for k, i in items.items()
                if i.dirty
            ]  # fmt: skip
            if item_rows:
                await conn.execute(
                    "INSERT INTO library_items (user_id, entity, key, seq, deleted, value,"
                    " stamp, op_id, device_id, changed_at)"
                    " SELECT u, e, k, s, d, v::jsonb, st, o, dv, at FROM unnest(%b::text[],"
                    " %b::text[], %b::text[], %b::bigint[], %b::bool[], %b::text[],"
                    " %b::text[], %b::text[], %b::text[], %b::timestamptz[])"
                    " AS t(u, e, k, s, d, v, st, o, dv, at)"
                    " ON CONFLICT (user_id, entity, key) DO UPDATE SET seq = EXCLUDED.seq,"
                    " deleted = EXCLUDED.deleted, value = EXCLUDED.value,"
                    " stamp = EXCLUDED.stamp, op_id = EXCLUDED.op_id,"
                    " device_id = EXCLUDED.device_id, changed_at = EXCLUDED.changed_at",
                    _columns(item_rows, 10),
                )
            user_rows = [(u, s.seq, json.dumps(s.activity)) for u, s in users.items() if s.dirty]
            if user_rows:
                await conn.execute(
                    "INSERT INTO library_users (user_id, seq, activity) SELECT u, s, a::jsonb"
                    " FROM unnest(%b::text[], %b::bigint[], %b::text[]) AS t(u, s, a)"
                    " ON CONFLICT (user_id) DO UPDATE SET seq = EXCLUDED.seq,"
                    " activity = library_users.activity || EXCLUDED.activity",
                    _columns(user_rows, 3),
                )
        return [
            FeedMoved(uid, before[uid], s.seq, _moved_items(items, uid, before[uid]))
            for uid, s in users.items()
            if s.seq > before[uid]
        ]

    def announce(self, applied: Sequence[FeedMoved]) -> list[Push]:
        """Each user's new changes with the feed positions around them: a socket at
        ``from_seq`` forwards them as they are; one behind reads the feed instead."""
        pushes: list[Push] = []
        for m in applied:
            pushes.append(
                Push(
                    m.user_id,
                    {"type": "library", "from_seq": m.from_seq, "seq": m.seq, "changes": m.changes},
                )
            )
            if any(c["entity"] in UP_NEXT_INPUTS for c in m.changes):
                pushes.append(Push(m.user_id, {"type": "up_next"}))
        return pushes

    def background(self, stores: Stores) -> Any:
        days = getattr(stores.settings, "tombstone_days", TOMBSTONE_DAYS)
        return TombstonePurge(stores.pg, days)


class TombstonePurge:
    """Forgets removals older than the retention, hourly; cursors older than a purged
    removal then answer 410 (the device resyncs from nothing)."""

    def __init__(self, pool: Any, days: float, every_s: float = 3600.0) -> None:
        self.pool = pool
        self.days = days
        self.every_s = every_s

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                async with self.pool.connection() as conn:
                    await purge_tombstones(conn, utcnow() - timedelta(days=self.days))
            except Exception as exc:  # the next round purges the same rows
                log.warning("tombstone purge failed (%r); retrying later", exc)
            await pause(self.every_s, stop)


class FeedMoved(NamedTuple):
    """What one batch added to one user's feed: positions ``from_seq`` to ``seq``."""

    user_id: str
    from_seq: int
    seq: int
    changes: list[dict[str, Any]]  # change_json, each with its "seq"


#: entities whose change can move up next (GET /v1/me/up-next)
UP_NEXT_INPUTS = frozenset({"watchlist", "history", "up_next", "settings"})


def _moved_items(
    items: dict[tuple[str, str, str], _Item], uid: str, after: int
) -> list[dict[str, Any]]:
    moved = sorted(
        ((k, i) for k, i in items.items() if k[0] == uid and i.seq > after), key=lambda x: x[1].seq
    )
    return [
        {"seq": i.seq, **change_json(k[1], k[2], i.deleted, i.value, i.changed_at, i.device_id)}
        for k, i in moved
    ]


def change_json(
    entity: str, key: str, deleted: bool, value: Any, changed_at: datetime, device_id: str
) -> dict[str, Any]:
    """One change as the sync feed shows it (GET /v1/sync and the sockets)."""
    item: dict[str, Any] = {"entity": entity}
    if key:
        item["content_id"] = key
    item["deleted"] = deleted
    if not deleted:
        item["value"] = value
    item["changed_at"] = iso_z(changed_at)
    item["device_id"] = device_id
    return item


# -- queries -----------------------------------------------------------------------


class CursorGone(LookupError):
    """The cursor is older than the oldest tombstone still kept: the device must resync."""


@dataclass(frozen=True, slots=True)
class Change:
    seq: int
    entity: str
    key: str
    deleted: bool
    value: Any
    changed_at: datetime
    device_id: str


async def feed_position(conn: AsyncConnection[Any], user_id: str) -> tuple[int, int]:
    """(the user's newest change, the newest purged tombstone)."""
    rows = await fetch_rows(
        conn, "SELECT seq, purged_seq FROM library_users WHERE user_id = %s", (user_id,)
    )
    return (rows[0][0], rows[0][1]) if rows else (0, 0)


async def changes(
    conn: AsyncConnection[Any], user_id: str, since: int | None, limit: int, horizon: int = 0
) -> tuple[list[Change], bool, int]:
    """The user's changes after ``since`` (None: from the start), oldest first, and the
    purge horizon now. ``horizon`` is the one the cursor was issued under: a cursor that
    a later purge passed raises CursorGone (removals it has not seen are no longer here
    to tell the device). A full resync needs no tombstone: the device starts empty."""
    _, purged = await feed_position(conn, user_id)
    if since is not None and since < purged and horizon < purged:
        raise CursorGone(purged)
    rows = await fetch_rows(
        conn,
        "SELECT seq, entity, key, deleted, value, changed_at, device_id FROM library_items"
        " WHERE user_id = %s AND seq > %s ORDER BY seq LIMIT %s",
        (user_id, since or 0, limit + 1),
    )
    return [Change(*r) for r in rows[:limit]], len(rows) > limit, purged


async def last_activities(conn: AsyncConnection[Any], user_id: str) -> dict[str, int]:
    rows = await fetch_rows(
        conn, "SELECT activity FROM library_users WHERE user_id = %s", (user_id,)
    )
    return dict(rows[0][0]) if rows else {}


async def known_ops(conn: AsyncConnection[Any], user_id: str, op_ids: list[str]) -> set[str]:
    rows = await fetch_rows(
        conn,
        "SELECT op_id FROM library_ops WHERE user_id = %s AND op_id = ANY(%s)",
        (user_id, op_ids),
    )
    return {r[0] for r in rows}


async def register(conn: AsyncConnection[Any], user_id: str, entity: str) -> Any:
    """The value of a per-user register (services, settings); None when unset or removed."""
    rows = await fetch_rows(
        conn,
        "SELECT value FROM library_items WHERE user_id = %s AND entity = %s AND key = ''"
        " AND NOT deleted",
        (user_id, entity),
    )
    return rows[0][0] if rows else None


async def entries(
    conn: AsyncConnection[Any], user_id: str, entity: str
) -> list[tuple[str, Any, datetime]]:
    """Present (key, value, changed_at) of one entity, merged titles read as their
    survivor (the newest change of the two wins)."""
    rows = await fetch_rows(
        conn,
        "SELECT coalesce(m.into_id, i.key), i.value, i.changed_at FROM library_items i"
        " LEFT JOIN content_merges m ON m.merged_id = i.key"
        " WHERE i.user_id = %s AND i.entity = %s AND NOT i.deleted ORDER BY i.seq",
        (user_id, entity),
    )
    out: dict[str, tuple[str, Any, datetime]] = {}
    for key, value, changed_at in rows:
        out[key] = (key, value, changed_at)
    return list(out.values())


async def purge_tombstones(conn: AsyncConnection[Any], older_than: datetime) -> int:
    """Forget removals older than the retention; cursors before them answer 410."""
    cur = await conn.execute(
        "WITH gone AS (DELETE FROM library_items WHERE deleted AND changed_at < %s"
        " RETURNING user_id, seq), top AS (SELECT user_id, max(seq) AS s FROM gone"
        " GROUP BY user_id) UPDATE library_users u SET purged_seq = greatest(u.purged_seq, top.s)"
        " FROM top WHERE u.user_id = top.user_id",
        (older_than,),
    )
    return cur.rowcount
