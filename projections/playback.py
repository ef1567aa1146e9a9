"""Playback read model: last position per user x content, and continue-watching.

PostgreSQL ``playback_positions`` holds the truth (last writer wins on the
event's ``occurred_at``, then log order, so a device syncing late cannot move a
newer position back). Redis holds, per user, a sorted set of in-progress titles
scored by last update (newest first) and a hash with their positions, derived
from the rows after each batch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.events import Event
from core.fanout import Push
from core.ids import derived_id, from_millis, iso_z, to_millis
from core.topics import PLAYBACK
from domain.library import DEFAULT_RULES, ResumeRules, play_counts
from domain.playback import ProgressState, check_position, classify, progress_ratio
from domain.sync.hlc import Stamp
from projections.base import Envelope, Output, RejectedEvent, Stores

# The kind of key comes before the user id, so no user id (they may contain ':') can make
# one user's key equal to another user's key of the other kind.
CW_KEY = "mgw:cw:z:{user}"  # sorted set: content_id -> updated_at (ms)
CW_ITEMS_KEY = "mgw:cw:h:{user}"  # hash: content_id -> JSON position
_PLAYBACK_TYPES = frozenset(PLAYBACK.event_types)
# Per-connection staging tables, emptied at commit and at the start of each apply.
_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS playback_batch"
    " (LIKE playback_positions INCLUDING DEFAULTS) ON COMMIT DELETE ROWS;"
    " CREATE TEMP TABLE IF NOT EXISTS playback_disarmed"
    " (user_id text, content_id text) ON COMMIT DELETE ROWS;"
    " DELETE FROM playback_batch; DELETE FROM playback_disarmed"
)
Row = tuple[Any, ...]

# ARGV[1]: JSON list of [user, content, score, item] per title; score -1 means "not in
# progress: remove". One JSON argument instead of four per title keeps the client's
# command packing (pure Python in redis-py) off the hot path; Redis decodes it in C.
_SYNC_SCRIPT = """
local rows = cjson.decode(ARGV[1])
for _, r in ipairs(rows) do
  local z = 'mgw:cw:z:' .. r[1]
  local h = 'mgw:cw:h:' .. r[1]
  if r[3] == -1 then
    redis.call('ZREM', z, r[2])
    redis.call('HDEL', h, r[2])
  else
    redis.call('ZADD', z, r[3], r[2])
    redis.call('HSET', h, r[2], r[4])
  end
end
return #rows
"""


class PlaybackProjector:
    name = "playback"
    topics = (PLAYBACK.name,)
    tables = ("playback_positions",)
    side_stores = ("redis",)

    def check(self, event: Envelope) -> None:
        if event.event_type not in _PLAYBACK_TYPES:
            raise RejectedEvent(f"playback does not handle {event.event_type}")
        p = event.payload
        if not p["user_id"] or not p["content_id"]:
            raise RejectedEvent("user_id and content_id must be non-empty")
        violation = check_position(p["position_s"], p["duration_s"])
        if violation:
            raise RejectedEvent(f"{violation.field}: {violation.message}")

    async def apply(
        self, conn: AsyncConnection[Any], batch: Sequence[Envelope]
    ) -> list[Row] | Output:
        # Fold the batch in memory first: one row per key reaches the database.
        latest: dict[tuple[str, str], Envelope] = {}
        counts: dict[tuple[str, str], int] = {}
        for e in batch:
            p = e.payload
            k = (p["user_id"], p["content_id"])
            counts[k] = counts.get(k, 0) + 1
            seen = latest.get(k)
            if seen is None or (p["occurred_at"], e.offset) >= (
                seen.payload["occurred_at"],
                seen.offset,
            ):
                latest[k] = e
        # Binary COPY of one row per key into a per-connection staging table; the lookups
        # this batch needs (earlier plays' armed flags, users' own resume rules) are then
        # joins against it. psycopg formats COPY rows in C, while binding the keys as
        # arrays quoted every element in Python (about 3 us per event, py-spy).
        await conn.execute(_STAGING)  # emptied too: an isolation retry reuses the tables
        async with conn.cursor().copy(
            "COPY playback_batch (user_id, content_id, device_id, position_s, duration_s,"
            " updated_at, event_count) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(["text", "text", "text", "float8", "float8", "timestamptz", "int8"])
            write = copy.write_row
            for k, e in latest.items():
                p = e.payload
                await write(
                    (
                        k[0],
                        k[1],
                        p["device_id"],
                        p["position_s"],
                        p["duration_s"],
                        p["occurred_at"],
                        counts[k],
                    )
                )
        rules, disarmed = await _lookups(conn)
        armed, watches = _watches(batch, rules, disarmed)
        off = [k for k in latest if not armed[k]]
        if off:
            async with conn.cursor().copy(
                "COPY playback_disarmed (user_id, content_id) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.set_types(["text", "text"])
                for k in off:
                    await copy.write_row(k)
        newer = "EXCLUDED.updated_at >= t.updated_at"
        cur = await conn.execute(
            "INSERT INTO playback_positions AS t (user_id, content_id, device_id, position_s,"
            " duration_s, updated_at, event_count, armed)"
            " SELECT b.user_id, b.content_id, b.device_id, b.position_s, b.duration_s,"
            " b.updated_at, b.event_count, d.user_id IS NULL FROM playback_batch b"
            " LEFT JOIN playback_disarmed d USING (user_id, content_id)"
            " ON CONFLICT (user_id, content_id) DO UPDATE SET"
            f" device_id = CASE WHEN {newer} THEN EXCLUDED.device_id ELSE t.device_id END,"
            f" position_s = CASE WHEN {newer} THEN EXCLUDED.position_s ELSE t.position_s END,"
            f" duration_s = CASE WHEN {newer} THEN COALESCE(EXCLUDED.duration_s, t.duration_s)"
            " ELSE t.duration_s END,"
            " updated_at = GREATEST(EXCLUDED.updated_at, t.updated_at),"
            " event_count = t.event_count + EXCLUDED.event_count, armed = EXCLUDED.armed"
            # every key is updated (event_count), so this returns each key's final state
            " RETURNING t.user_id, t.content_id, t.position_s, t.duration_s,"
            " (extract(epoch FROM t.updated_at) * 1000)::bigint, t.device_id",
            binary=True,
        )
        # each row carries its user's rules, so the side store needs no second read
        get, default = rules.get, DEFAULT_RULES
        rows = [(*r, get(r[0], default)) for r in await cur.fetchall()]
        return Output(rows, watches) if watches else rows

    async def sync_side_stores(
        self,
        stores: Stores,
        conn: AsyncConnection[Any],
        applied: Any,
        redelivered: Sequence[Envelope],
    ) -> None:
        if stores.redis is None:
            return
        rows: list[Row] = list(applied or ())
        # Keys applied in an earlier attempt (a redelivery) are read back from PostgreSQL.
        missing = {(e.payload["user_id"], e.payload["content_id"]) for e in redelivered}
        if missing:
            missing -= {(r[0], r[1]) for r in rows}
        if missing:
            cur = await conn.execute(
                "SELECT t.user_id, t.content_id, t.position_s, t.duration_s,"
                " (extract(epoch FROM t.updated_at) * 1000)::bigint, t.device_id"
                " FROM playback_positions t"
                " JOIN unnest(%s::text[], %s::text[]) AS u(user_id, content_id)"
                " USING (user_id, content_id)",
                ([k[0] for k in missing], [k[1] for k in missing]),
            )
            back = await cur.fetchall()
            rules = await rules_of(conn, {r[0] for r in back})
            rows += [(*r, rules.get(r[0], DEFAULT_RULES)) for r in back]
        # One script call per batch: atomic like MULTI/EXEC, but one round trip and one
        # reply instead of two commands (and two replies to parse) per title.
        ops: list[list[Any]] = []
        for user, content, pos, dur, ms, _device, r in rows:
            if classify(pos, dur, r.min_resume_pct, r.watched_pct) is ProgressState.IN_PROGRESS:
                ops.append([user, content, ms, f"[{pos!r},{_num(dur)},{ms}]"])
            else:
                ops.append([user, content, -1, ""])
        if ops:
            await stores.redis.eval(_SYNC_SCRIPT, 0, json.dumps(ops))

    async def resync_side_stores(self, stores: Stores, chunk: int = 500) -> None:
        """Make Redis agree with the table after a blue/green switch (mgw/rebuild.py),
        without a moment where a user's continue-watching reads empty: each user's keys
        are written beside the live ones and renamed over them, a chunk of users per
        MULTI. Keys of users the table no longer holds in progress are removed."""
        if stores.redis is None:
            return
        redis = stores.redis
        kept: set[str] = set()
        # server-side cursor: the table may be large
        async with (
            stores.pg.connection() as conn,
            conn.transaction(),
            conn.cursor(name="playback-resync") as cur,
        ):
            await cur.execute(
                "SELECT user_id, content_id, position_s, duration_s,"
                " (extract(epoch FROM updated_at) * 1000)::bigint FROM playback_positions"
                " ORDER BY user_id"
            )
            user: str | None = None
            items: list[tuple[str, float, float | None, int]] = []
            pending: list[tuple[str, list[tuple[str, float, float | None, int]]]] = []
            async for uid, content, pos, dur, ms in cur:
                if uid != user and user is not None:
                    pending.append((user, items))
                    items = []
                user = uid
                items.append((content, pos, dur, ms))
                if len(pending) >= chunk:
                    kept |= await _swap_users(conn, redis, pending)
                    pending = []
            if user is not None:
                pending.append((user, items))
            if pending:
                kept |= await _swap_users(conn, redis, pending)
        stale = []
        async for key in redis.scan_iter(match="mgw:cw:z:*", count=1000):
            uid = _s(key)[len("mgw:cw:z:") :]
            if uid not in kept:
                stale += [CW_KEY.format(user=uid), CW_ITEMS_KEY.format(user=uid)]
        for i in range(0, len(stale), 1000):
            await redis.unlink(*stale[i : i + 1000])

    def announce(self, applied: Sequence[Row]) -> list[Push]:
        """Each title's position as it now stands, for the user's other devices (a
        device knows its own: it ignores a push that names it)."""
        return [
            Push(
                user,
                {
                    "type": "playback",
                    "content_id": content,
                    "position_s": pos,
                    "duration_s": dur,
                    "updated_at": iso_z(from_millis(ms)),
                    "device_id": device,
                },
            )
            for user, content, pos, dur, ms, device, _rules in applied
        ]

    async def reset_side_stores(self, stores: Stores) -> None:
        if stores.redis is None:
            return
        async for key in stores.redis.scan_iter(match="mgw:cw:*", count=1000):
            await stores.redis.unlink(key)

    async def prepare(self, stores: Stores) -> None:
        return None


async def rules_of(conn: AsyncConnection[Any], users: Iterable[str]) -> dict[str, ResumeRules]:
    """The users' own resume rules, as the library has them now (its settings register);
    users without any keep the defaults."""
    cur = await conn.execute(
        "SELECT user_id, value FROM library_items WHERE entity = 'settings' AND key = ''"
        " AND NOT deleted AND user_id = ANY(%b::text[])",
        (sorted(users),),
    )
    return {u: ResumeRules(**v) for u, v in await cur.fetchall()}


async def _lookups(
    conn: AsyncConnection[Any],
) -> tuple[dict[str, ResumeRules], set[tuple[str, str]]]:
    """For the keys staged in playback_batch: their users' own resume rules (users without
    any keep the defaults), and the titles whose current play may not become a watch any
    more (not armed; new titles and every other title are armed). One round trip."""
    cur = await conn.execute(
        "SELECT b.user_id, b.content_id, NULL::jsonb FROM playback_batch b"
        " JOIN playback_positions p USING (user_id, content_id) WHERE NOT p.armed"
        " UNION ALL"
        " SELECT s.user_id, NULL, s.value FROM library_items s WHERE s.entity = 'settings'"
        " AND s.key = '' AND NOT s.deleted"
        " AND s.user_id IN (SELECT DISTINCT user_id FROM playback_batch)",
        binary=True,
    )
    rules: dict[str, ResumeRules] = {}
    disarmed: set[tuple[str, str]] = set()
    for user, content, value in await cur.fetchall():
        if content is None:
            rules[user] = ResumeRules(**value)
        else:
            disarmed.add((user, content))
    return rules, disarmed


def _watches(
    batch: Sequence[Envelope], rules: dict[str, ResumeRules], disarmed: set[tuple[str, str]]
) -> tuple[dict[tuple[str, str], bool], list[Event]]:
    """Plays that crossed their user's watched threshold, as WatchRecorded events for the
    library (appended with the batch: the decision is made once and kept in the log, so
    the library's replay never depends on how two topics interleaved), and each title's
    armed flag after the batch (``disarmed``: the titles not armed before it)."""
    events: list[Event] = []
    armed: dict[tuple[str, str], bool] = {}
    get_rules, default = rules.get, DEFAULT_RULES
    for e in batch:  # log order: one user's reports are in one partition
        p = e.payload
        k = (p["user_id"], p["content_id"])
        was = armed.get(k)
        if was is None:
            was = k not in disarmed
        watch, armed[k] = play_counts(
            get_rules(k[0], default), p["position_s"], p["duration_s"], was
        )
        if watch:
            op_id = f"play:{e.topic}:{e.partition}:{e.offset}"
            at = p["occurred_at"]
            events.append(
                Event(
                    "WatchRecorded",
                    k[0],
                    {
                        "user_id": k[0],
                        "op_id": op_id,
                        "device_id": p["device_id"],
                        "stamp": Stamp(to_millis(at), 0, p["device_id"]).encode(),
                        "content_id": k[1],
                        "watched_at": at,
                        "source": "playback",
                    },
                    event_id=derived_id(op_id),
                    occurred_at=at,
                    producer="playback",
                )
            )
    return armed, events


def _num(v: float | None) -> str:
    return "null" if v is None else repr(v)


# -- queries -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContinueWatchingItem:
    content_id: str
    title: str | None
    position_s: float
    duration_s: float | None
    progress: float | None
    updated_at: datetime


async def continue_watching(
    redis: Any,
    pg: AsyncConnectionPool,
    user_id: str,
    *,
    limit: int = 20,
    before: tuple[int, str] | None = None,
) -> tuple[list[ContinueWatchingItem], tuple[int, str] | None]:
    """Newest first. ``before`` is the (updated_ms, content_id) cursor of the last item seen."""
    zkey = CW_KEY.format(user=user_id)
    if before is None:
        ranked = await redis.zrevrange(zkey, 0, limit, withscores=True)
    else:
        # Scores can tie, so fetch from the cursor's score inclusive and skip past it.
        ranked = await redis.zrevrangebyscore(
            zkey, before[0], "-inf", start=0, num=limit + 64, withscores=True
        )
        ranked = [
            (c, s)
            for c, s in ranked
            if int(s) < before[0] or (int(s) == before[0] and _s(c) < before[1])
        ]
    page, more = ranked[:limit], len(ranked) > limit
    if not page:
        return [], None
    ids = [_s(c) for c, _ in page]
    raw = await redis.hmget(CW_ITEMS_KEY.format(user=user_id), ids)
    titles: dict[str, str] = {}
    async with pg.connection() as conn:
        cur = await conn.execute(
            "SELECT content_id, title FROM content WHERE content_id = ANY(%s)", (ids,)
        )
        titles = dict(await cur.fetchall())
    items = []
    for cid, blob in zip(ids, raw, strict=True):
        if blob is None:
            continue  # removed between the two reads
        pos, dur, ms = json.loads(blob)
        items.append(
            ContinueWatchingItem(
                cid, titles.get(cid), pos, dur, progress_ratio(pos, dur), from_millis(ms)
            )
        )
    nxt = (to_millis(items[-1].updated_at), items[-1].content_id) if more and items else None
    return items, nxt


async def continue_watching_from_table(
    pg: AsyncConnectionPool,
    user_id: str,
    *,
    limit: int = 20,
    before: tuple[int, str] | None = None,
) -> tuple[list[ContinueWatchingItem], tuple[int, str] | None]:
    """The page ``continue_watching`` reads from Redis, read from the table Redis is
    kept from, in the same order and with the same cursor: for while Redis is away.
    Each of the user's positions is classified here (Redis holds only the ones in
    progress), so it costs more per page; it is meant for an outage, not every read."""
    async with pg.connection() as conn:
        rules = (await rules_of(conn, {user_id})).get(user_id, DEFAULT_RULES)
        cur = await conn.execute(
            "SELECT * FROM (SELECT p.content_id, c.title, p.position_s, p.duration_s,"
            " (extract(epoch FROM p.updated_at) * 1000)::bigint AS ms"
            " FROM playback_positions p LEFT JOIN content c USING (content_id)"
            " WHERE p.user_id = %s) t"
            " WHERE %s::bigint IS NULL OR t.ms < %s OR (t.ms = %s AND t.content_id < %s)"
            " ORDER BY t.ms DESC, t.content_id DESC",
            (user_id, *((before[0], before[0], before[0], before[1]) if before else (None,) * 4)),
        )
        items: list[ContinueWatchingItem] = []
        more = False
        async for cid, title, pos, dur, ms in cur:
            state = classify(pos, dur, rules.min_resume_pct, rules.watched_pct)
            if state is not ProgressState.IN_PROGRESS:
                continue
            if len(items) == limit:
                more = True
                break
            items.append(
                ContinueWatchingItem(
                    cid, title, pos, dur, progress_ratio(pos, dur), from_millis(ms)
                )
            )
    nxt = (to_millis(items[-1].updated_at), items[-1].content_id) if more and items else None
    return items, nxt


def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


async def _swap_users(
    conn: AsyncConnection[Any],
    redis: Any,
    users: list[tuple[str, list[tuple[str, float, float | None, int]]]],
) -> set[str]:
    """Replace these users' continue-watching keys in one MULTI; the users kept."""
    rules = await rules_of(conn, {u for u, _ in users})
    pipe = redis.pipeline(transaction=True)
    kept = set()
    for user, items in users:
        r = rules.get(user, DEFAULT_RULES)
        live = [
            (c, pos, dur, ms)
            for c, pos, dur, ms in items
            if classify(pos, dur, r.min_resume_pct, r.watched_pct) is ProgressState.IN_PROGRESS
        ]
        z, h = CW_KEY.format(user=user), CW_ITEMS_KEY.format(user=user)
        if not live:
            pipe.unlink(z, h)
            continue
        kept.add(user)
        tz, th = f"{z}:resync", f"{h}:resync"
        pipe.unlink(tz, th)
        pipe.zadd(tz, {c: ms for c, _, _, ms in live})
        pipe.hset(th, mapping={c: f"[{pos!r},{_num(dur)},{ms}]" for c, pos, dur, ms in live})
        pipe.rename(tz, z)
        pipe.rename(th, h)
    await pipe.execute()
    return kept


async def side_store_digest(redis: Any) -> str:
    """A digest of every continue-watching key, to compare a replay with the original."""
    import hashlib

    h = hashlib.sha256()
    keys = sorted([_s(k) async for k in redis.scan_iter(match="mgw:cw:*", count=1000)])
    for key in keys:
        h.update(key.encode())
        if key.startswith("mgw:cw:h:"):
            for f, v in sorted((await redis.hgetall(key)).items()):
                h.update(f + b"=" + v)
        else:
            for m, score in await redis.zrange(key, 0, -1, withscores=True):
                h.update(m + f"@{score}".encode())
    return h.hexdigest()
