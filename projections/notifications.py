"""Notifications read model (``notifications``, ``notification_users``) and the decider
that feeds it.

Two halves, one projector. The *decider* reads the catalog topics (availability,
resolution, editorial content) and broadcasts, looks up who cares (watchlists, services,
playback, profiles: other read models) and appends one ``NotificationCreated`` per user
it decided for. The *fold* builds the list from the notifications topic alone:
``NotificationCreated`` (the first per user, kind and key; none for a kind the user turned
off), reads, preferences and digests, all keyed by user, so one user's story is in one
partition in log order. A decision that read another read model is thus taken once,
when it happened, and written down: a replay folds the same list without asking again.
What the decider remembers of the catalog (offers open now, the entity of each platform
record, episodes seen) is folded from the catalog topics alone, for the same reason.

Time-based decisions (a title leaving within 7 days) and the daily email digest are the
background step's (``NotificationSteps``): it appends what it decides, like the session
sweeper.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.backoff import pause
from core.events import Event
from core.fanout import Push
from core.ids import derived_id, iso_z, utcnow
from core.topics import AVAILABILITY, CATALOG, NOTIFICATIONS, RESOLUTION
from domain import notifications as rules
from domain.identity.ratings import normalize_rating
from projections.base import Envelope, Output, PostgresOnly, RejectedEvent, Stores, fetch_rows
from projections.catalog import strictest_rating

log = logging.getLogger("mgw.notifications")
_FOLDED = frozenset(NOTIFICATIONS.event_types) - {"NotificationBroadcast"}
_RECORD_EVENTS = frozenset({"AvailabilityChanged", "AvailabilityEnded", "ContentResolved"})
_TITLE_EVENTS = frozenset({"ContentUpserted", "ContentResolved"})
_ITEM = "notification_id, kind, content_id, title, body, data, created_at, read_at, seq"


@functools.cache
def notification_id(user_id: str, kind: str, key: str) -> str:
    """The same decision always gets the same id, so a repeated one is recognisable."""
    return derived_id(f"notification:{user_id}:{kind}:{key}")


def _unrated_as() -> str:
    # the same policy search applies (MGW_UNRATED_AS); read once, like every setting
    value = (os.environ.get("MGW_UNRATED_AS") or "strictest").strip().lower()
    return value if value in ("strictest", "allowed") else "strictest"


def item_json(
    notification_id: str,
    kind: str,
    content_id: str | None,
    title: str,
    body: str,
    data: dict[str, Any],
    created_at: datetime,
    read_at: datetime | None,
    seq: int,
) -> dict[str, Any]:
    """One notification as the API lists it and a push carries it."""
    return {
        "id": notification_id,
        "kind": kind,
        "content_id": content_id,
        "title": title,
        "body": body,
        "data": data,
        "created_at": iso_z(created_at),
        "read": read_at is not None,
        "read_at": iso_z(read_at) if read_at else None,
        "position": seq,
    }


@dataclass(slots=True)
class _User:
    seq: int = 0
    kinds: dict[str, bool] = field(default_factory=dict)
    digest: str = "off"
    digest_day: date | None = None
    digest_seq: int = 0
    dirty: bool = False


@dataclass(frozen=True, slots=True)
class _Arrival:
    content_id: str
    platform: str
    region: str
    offer_type: str
    at: datetime


@dataclass(frozen=True, slots=True)
class _Episode:
    content_id: str
    series_id: str
    season: int
    episode: int
    title: str
    rating: str | None


def created(
    user_id: str,
    kind: str,
    key: str,
    title: str,
    body: str,
    *,
    content_id: str | None = None,
    data: dict[str, str] | None = None,
    at: datetime | None = None,
    producer: str = "notifications",
) -> Event:
    nid = notification_id(user_id, kind, key)
    payload = {
        "notification_id": nid,
        "user_id": user_id,
        "kind": kind,
        "key": key,
        "content_id": content_id,
        "title": title,
        "body": body,
        "data": data or {},
    }
    # the event id is the decision's: a decision repeated (a redelivered batch, two
    # sweeps before the fold) is the same event twice, and the fold keeps one
    return Event(
        "NotificationCreated",
        user_id,
        payload,
        event_id=nid,
        occurred_at=at or utcnow(),
        producer=producer,
    )


class NotificationsProjector(PostgresOnly):
    name = "notifications"
    topics: tuple[str, ...] = (NOTIFICATIONS.name, AVAILABILITY.name, RESOLUTION.name, CATALOG.name)
    #: one process: a platform record's offers (availability topic) and its entity
    #: (resolution topic) sit in different partitions, and the decider must see both in turn
    shardable = False
    tables: tuple[str, ...] = (
        "notifications",
        "notification_users",
        "notification_offers",
        "notification_records",
        "notification_episodes",
    )

    def check(self, event: Envelope) -> None:
        if event.topic != NOTIFICATIONS.name:
            return  # catalog events belong to the catalog projectors to judge
        p = event.payload
        t = event.event_type
        if t not in NOTIFICATIONS.event_types:
            raise RejectedEvent(f"notifications does not handle {t}")
        if t == "NotificationBroadcast":
            if not p["broadcast_id"] or event.key != rules.BROADCASTS_KEY:
                raise RejectedEvent(f"record key must be {rules.BROADCASTS_KEY!r}")
            if not p["title"].strip():
                raise RejectedEvent("title: must not be empty")
            return
        if not p["user_id"] or event.key != p["user_id"]:
            raise RejectedEvent("user_id: must be non-empty and the record key")
        if t == "NotificationCreated":
            if p["kind"] not in rules.KINDS:
                raise RejectedEvent(f"kind: must be one of {', '.join(rules.KINDS)}")
            if not p["key"] or not p["title"].strip():
                raise RejectedEvent("key and title: must not be empty")
        elif t == "NotificationPreferencesSet":
            unknown = set(p["kinds"]) - set(rules.KINDS)
            if unknown:
                raise RejectedEvent(f"kinds: unknown kind(s) {', '.join(sorted(unknown))}")
            if p["digest"] is not None and p["digest"] not in rules.DIGEST_MODES:
                raise RejectedEvent("digest: must be off or daily")
        elif t == "NotificationDigestSent":
            date.fromisoformat(p["day"])  # a bad day is rejected by the pipeline

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> Output:
        rows = await self._fold(conn, [e for e in batch if e.event_type in _FOLDED])
        decided = await self._broadcasts(
            conn, [e for e in batch if e.event_type == "NotificationBroadcast"]
        )
        decided += await self._availability(
            conn, [e for e in batch if e.event_type in _RECORD_EVENTS]
        )
        decided += await self._episodes(conn, [e for e in batch if e.event_type in _TITLE_EVENTS])
        return Output(rows, decided)

    def announce(self, applied: Any) -> list[Push]:
        return [
            Push(uid, {"type": "notification", "notification": item}) for uid, item in applied or ()
        ]

    def background(self, stores: Stores) -> NotificationSteps | None:
        if stores.publisher is None:
            return None
        return NotificationSteps(stores)

    # -- the fold ---------------------------------------------------------------------

    async def _fold(
        self, conn: AsyncConnection[Any], batch: Sequence[Envelope]
    ) -> list[tuple[str, dict[str, Any]]]:
        if not batch:
            return []
        ids = sorted({e.payload["user_id"] for e in batch})
        users = {u: _User() for u in ids}
        for uid, seq, kinds, digest, day, dseq in await fetch_rows(
            conn,
            "SELECT user_id, seq, kinds, digest, digest_day, digest_seq FROM notification_users"
            " WHERE user_id = ANY(%s)",
            (ids,),
        ):
            users[uid] = _User(seq, dict(kinds), digest, day, dseq)
        made = [e.payload for e in batch if e.event_type == "NotificationCreated"]
        seen = {
            (r[0], r[1], r[2])
            for r in await fetch_rows(
                conn,
                "SELECT n.user_id, n.kind, n.key FROM notifications n JOIN unnest(%s::text[],"
                " %s::text[], %s::text[]) AS t(u, k, y) ON n.user_id = t.u AND n.kind = t.k"
                " AND n.key = t.y",
                ([p["user_id"] for p in made], [p["kind"] for p in made], [p["key"] for p in made]),
            )
        }
        new: list[tuple[Any, ...]] = []
        reads: list[tuple[Any, ...]] = []
        for e in batch:
            p = e.payload
            u = users[p["user_id"]]
            if e.event_type == "NotificationCreated":
                once = (p["user_id"], p["kind"], p["key"])
                if once in seen or not rules.kind_allowed(u.kinds, p["kind"]):
                    continue
                seen.add(once)
                u.seq += 1
                u.dirty = True
                new.append(
                    (p["user_id"], u.seq, p["notification_id"], p["kind"], p["key"],
                     p["content_id"], p["title"], p["body"], dict(p["data"]), e.happened_at)
                )  # fmt: skip
            elif e.event_type == "NotificationsRead":
                # bounded by the counter now: a notification folded after the read stays
                # unread, however the batch falls
                reads.append(
                    (p["user_id"], u.seq, p["all"], list(p["ids"]), p["before_seq"], e.happened_at)
                )
            elif e.event_type == "NotificationPreferencesSet":
                u.kinds.update(p["kinds"])
                if p["digest"] is not None:
                    u.digest = p["digest"]
                u.dirty = True
            elif e.event_type == "NotificationDigestSent":
                day = date.fromisoformat(p["day"])
                if u.digest_day is None or day > u.digest_day:
                    u.digest_day = day
                u.digest_seq = max(u.digest_seq, p["through_seq"])
                u.dirty = True
            elif e.event_type == "NotificationDigestUnsubscribed":
                u.digest = "off"
                u.dirty = True
        async with conn.cursor() as cur:
            if new:
                await cur.executemany(
                    "INSERT INTO notifications (user_id, seq, notification_id, kind, key,"
                    " content_id, title, body, data, created_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s)",
                    [(*r[:8], json.dumps(r[8]), r[9]) for r in new],
                )
            for uid, upto, every, nids, before, at in reads:
                await cur.execute(
                    "UPDATE notifications SET read_at = %s WHERE user_id = %s AND read_at IS NULL"
                    " AND seq <= %s AND (%s OR notification_id = ANY(%s::text[]) OR seq <= %s)",
                    (at, uid, upto, every, nids, before if before is not None else -1),
                )
            changed = [
                (uid, u.seq, json.dumps(u.kinds), u.digest, u.digest_day, u.digest_seq)
                for uid, u in users.items()
                if u.dirty
            ]
            if changed:
                await cur.executemany(
                    "INSERT INTO notification_users (user_id, seq, kinds, digest, digest_day,"
                    " digest_seq) VALUES (%s, %s, %s::jsonb, %s, %s, %s)"
                    " ON CONFLICT (user_id) DO UPDATE SET seq = EXCLUDED.seq,"
                    " kinds = EXCLUDED.kinds, digest = EXCLUDED.digest,"
                    " digest_day = EXCLUDED.digest_day, digest_seq = EXCLUDED.digest_seq",
                    changed,
                )
        return [
            (r[0], item_json(r[2], r[3], r[5], r[6], r[7], r[8], r[9], None, r[1])) for r in new
        ]

    # -- the decider ------------------------------------------------------------------

    async def _broadcasts(
        self, conn: AsyncConnection[Any], batch: Sequence[Envelope]
    ) -> list[Event]:
        if not batch:
            return []
        users = [r[0] for r in await fetch_rows(conn, "SELECT user_id FROM users ORDER BY 1")]
        out = []
        for e in batch:
            p = e.payload
            data = {"url": p["url"]} if p["url"] else {}
            out += [
                created(uid, rules.BROADCAST, p["broadcast_id"], p["title"], p["body"],
                        data=data, at=e.happened_at)
                for uid in users
            ]  # fmt: skip
        return out

    async def _availability(
        self, conn: AsyncConnection[Any], batch: Sequence[Envelope]
    ) -> list[Event]:
        """Offers newly open on a platform record whose entity is known: each is an
        arrival, and every watcher whose services take it hears of it once."""
        if not batch:
            return []
        keys = sorted({(e.payload["platform"], e.payload["platform_id"]) for e in batch})
        args = ([k[0] for k in keys], [k[1] for k in keys])
        offers: dict[tuple[str, str], set[tuple[str, str]]] = {k: set() for k in keys}
        for plat, pid, region, offer_type in await fetch_rows(
            conn,
            "SELECT o.platform, o.platform_id, o.region, o.offer_type FROM notification_offers o"
            " JOIN unnest(%s::text[], %s::text[]) AS k(p, i)"
            " ON o.platform = k.p AND o.platform_id = k.i",
            args,
        ):
            offers[(plat, pid)].add((region, offer_type))
        entity: dict[tuple[str, str], str] = {
            (r[0], r[1]): r[2]
            for r in await fetch_rows(
                conn,
                "SELECT r.platform, r.platform_id, r.content_id FROM notification_records r"
                " JOIN unnest(%s::text[], %s::text[]) AS k(p, i)"
                " ON r.platform = k.p AND r.platform_id = k.i",
                args,
            )
        }
        moved: dict[tuple[str, str], str] = {}
        arrivals: list[_Arrival] = []
        for e in batch:
            p = e.payload
            k = (p["platform"], p["platform_id"])
            if e.event_type == "ContentResolved":
                if entity.get(k) != p["content_id"]:
                    # a record new to this entity brings whatever it offers now
                    entity[k] = moved[k] = p["content_id"]
                    arrivals += [
                        _Arrival(p["content_id"], k[0], r, o, e.happened_at)
                        for r, o in sorted(offers[k])
                    ]
                continue
            now = (
                rules.offers_now(p["offers"], e.happened_at)
                if e.event_type == "AvailabilityChanged"
                else set()
            )
            if k in entity:
                arrivals += [
                    _Arrival(entity[k], k[0], r, o, e.happened_at)
                    for r, o in sorted(now - offers[k])
                ]
            offers[k] = now
        await conn.execute(
            "DELETE FROM notification_offers o USING unnest(%s::text[], %s::text[]) AS k(p, i)"
            " WHERE o.platform = k.p AND o.platform_id = k.i",
            args,
        )
        rows = [(k[0], k[1], r, o) for k, pairs in offers.items() for r, o in pairs]
        async with conn.cursor() as cur:
            if rows:
                await cur.executemany(
                    "INSERT INTO notification_offers (platform, platform_id, region, offer_type)"
                    " VALUES (%s, %s, %s, %s)",
                    rows,
                )
            if moved:
                await cur.executemany(
                    "INSERT INTO notification_records (platform, platform_id, content_id)"
                    " VALUES (%s, %s, %s) ON CONFLICT (platform, platform_id)"
                    " DO UPDATE SET content_id = EXCLUDED.content_id",
                    [(k[0], k[1], cid) for k, cid in moved.items()],
                )
        return await self._notify_arrivals(conn, arrivals)

    async def _notify_arrivals(
        self, conn: AsyncConnection[Any], arrivals: list[_Arrival]
    ) -> list[Event]:
        if not arrivals:
            return []
        rows = await fetch_rows(
            conn,
            "WITH a AS (SELECT coalesce(m.into_id, a.cid) AS cid, a.platform, a.region,"
            " a.offer_type, a.n FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[])"
            " WITH ORDINALITY AS a(cid, platform, region, offer_type, n)"
            " LEFT JOIN content_merges m ON m.merged_id = a.cid)"
            " SELECT DISTINCT ON (w.user_id, a.cid) w.user_id, a.cid, a.platform, a.region, a.n"
            " FROM a JOIN library_items w ON w.entity = 'watchlist' AND NOT w.deleted"
            " AND (w.key = a.cid OR w.key IN"
            " (SELECT merged_id FROM content_merges WHERE into_id = a.cid))"
            " JOIN library_items s ON s.user_id = w.user_id AND s.entity = 'services'"
            " AND s.key = '' AND NOT s.deleted"
            f" WHERE {_takes('a.region', 'a.platform', 'a.offer_type')}"
            " ORDER BY w.user_id, a.cid, a.n",
            (
                [a.content_id for a in arrivals],
                [a.platform for a in arrivals],
                [a.region for a in arrivals],
                [a.offer_type for a in arrivals],
            ),
        )
        if not rows:
            return []
        titles = await _titles(conn, sorted({r[1] for r in rows}))
        limits = await _limits(conn, sorted({r[0] for r in rows}))
        out = []
        for uid, cid, platform, region, n in rows:
            title, rating = titles.get(cid, (None, None))
            if not rules.may_notify(rating, limits.get(uid, ()), unrated_as=_unrated_as()):
                continue
            head, body = rules.available_text(title or "A title", platform, region)
            out.append(
                created(uid, rules.AVAILABLE, cid, head, body, content_id=cid,
                        at=arrivals[n - 1].at,
                        data={"platform": platform, "region": region})
            )  # fmt: skip
        return out

    async def _episodes(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> list[Event]:
        """An episode number never seen for its series is new: the series' watchers (on
        the watchlist, or with an episode played) hear of it once."""
        found: dict[tuple[str, int, int], _Episode] = {}
        for e in batch:
            p = e.payload
            if p["kind"] != "episode" or not p.get("series_id"):
                continue
            if p.get("season") is None or p.get("episode") is None:
                continue
            k = (p["series_id"], p["season"], p["episode"])
            rating = normalize_rating(p.get("rating"))
            found.setdefault(k, _Episode(p["content_id"], *k, p["title"].strip(), rating))
        if not found:
            return []
        fresh = await fetch_rows(
            conn,
            "INSERT INTO notification_episodes (series_id, season, episode)"
            " SELECT * FROM unnest(%s::text[], %s::int[], %s::int[]) ON CONFLICT DO NOTHING"
            " RETURNING series_id, season, episode",
            tuple(list(c) for c in zip(*found, strict=True)),
        )
        new = [found[(r[0], r[1], r[2])] for r in fresh]
        if not new:
            return []
        rows = await fetch_rows(
            conn,
            "WITH s AS (SELECT coalesce(m.into_id, s.sid) AS sid, s.n FROM unnest(%s::text[])"
            " WITH ORDINALITY AS s(sid, n) LEFT JOIN content_merges m ON m.merged_id = s.sid),"
            " ids AS (SELECT s.n, s.sid AS cid FROM s UNION SELECT s.n, m.merged_id FROM s"
            " JOIN content_merges m ON m.into_id = s.sid)"
            " SELECT DISTINCT ids.n, w.user_id FROM ids JOIN library_items w"
            " ON w.entity = 'watchlist' AND NOT w.deleted AND w.key = ids.cid"
            " UNION SELECT DISTINCT s.n, p.user_id FROM s JOIN content c ON c.series_id = s.sid"
            " JOIN playback_positions p ON p.content_id = c.content_id ORDER BY 1, 2",
            ([ep.series_id for ep in new],),
        )
        if not rows:
            return []
        series = await _titles(conn, sorted({ep.series_id for ep in new}))
        episodes = await _titles(conn, sorted({ep.content_id for ep in new}))
        limits = await _limits(conn, sorted({r[1] for r in rows}))
        at = batch[-1].happened_at
        out = []
        for n, uid in rows:
            ep = new[n - 1]
            rating = strictest_rating([ep.rating, episodes.get(ep.content_id, (None, None))[1]])
            if not rules.may_notify(rating, limits.get(uid, ()), unrated_as=_unrated_as()):
                continue
            show = series.get(ep.series_id, (None, None))[0] or ep.title
            head, body = rules.episode_text(show, ep.season, ep.episode, ep.title)
            out.append(
                created(uid, rules.NEW_EPISODE,
                        rules.episode_key(ep.series_id, ep.season, ep.episode), head, body,
                        content_id=ep.content_id, at=at,
                        data={"series_id": ep.series_id, "season": str(ep.season),
                              "episode": str(ep.episode)})
            )  # fmt: skip
        return out


async def _titles(
    conn: AsyncConnection[Any], ids: list[str]
) -> dict[str, tuple[str | None, str | None]]:
    """content id -> (title, rating) from the catalog, as far as it has got."""
    rows = await fetch_rows(
        conn, "SELECT content_id, title, rating FROM content WHERE content_id = ANY(%s)", (ids,)
    )
    return {r[0]: (r[1], r[2]) for r in rows}


async def _limits(conn: AsyncConnection[Any], users: list[str]) -> dict[str, list[str | None]]:
    """user id -> the max ratings of the account's profiles."""
    out: dict[str, list[str | None]] = {}
    for uid, max_rating in await fetch_rows(
        conn, "SELECT user_id, max_rating FROM profiles WHERE user_id = ANY(%s)", (users,)
    ):
        out.setdefault(uid, []).append(max_rating)
    return out


# -- the background step: titles leaving, and the daily digest -----------------------------


def _takes(region: str, platform: str, offer_type: str) -> str:
    """SQL: the services register ``s`` takes this offer (its region, one of its
    platforms, and its offer types, where it names any)."""
    return (
        f"s.value->>'region' = {region} AND s.value->'platforms' ? {platform}"
        " AND (coalesce(jsonb_array_length(s.value->'offer_types'), 0) = 0"
        f" OR s.value->'offer_types' ? {offer_type})"
    )


_LEAVING_SQL = """
WITH soon AS (
    SELECT DISTINCT coalesce(m.into_id, t.content_id) AS cid
      FROM availability a JOIN platform_titles t USING (platform, platform_id)
      LEFT JOIN content_merges m ON m.merged_id = t.content_id
     WHERE a.available_until > %(now)s AND a.available_until <= %(edge)s
), watch AS (
    SELECT DISTINCT w.user_id, soon.cid FROM soon JOIN library_items w
        ON w.entity = 'watchlist' AND NOT w.deleted
       AND (w.key = soon.cid OR w.key IN (SELECT merged_id FROM content_merges
                                           WHERE into_id = soon.cid))
     WHERE NOT EXISTS (SELECT 1 FROM notifications n WHERE n.user_id = w.user_id
                          AND n.kind = 'leaving' AND n.key = soon.cid)
       AND coalesce((SELECT (u.kinds->>'leaving')::boolean FROM notification_users u
                       WHERE u.user_id = w.user_id), true)
)
SELECT watch.user_id, watch.cid, a.platform, a.available_until
  FROM watch
  JOIN library_items s ON s.user_id = watch.user_id AND s.entity = 'services'
   AND s.key = '' AND NOT s.deleted
  JOIN platform_titles t ON t.content_id = watch.cid
  JOIN availability a ON a.platform = t.platform AND a.platform_id = t.platform_id
   AND {takes}
   AND (a.available_until IS NULL OR a.available_until > %(now)s)
   AND (a.available_from IS NULL OR a.available_from <= %(now)s)
 ORDER BY 1, 2, 3
""".replace("{takes}", _takes("a.region", "a.platform", "a.offer_type"))


class NotificationSteps:
    """What depends on the clock, appended as events so the fold stays a function of the
    log: "leaving within 7 days" notifications (every ``leaving_every_s``) and the daily
    digest mails (every ``digest_every_s``). Both are callable directly (tests, ops)."""

    def __init__(self, stores: Stores, mailer: Any = None) -> None:
        from core.mail import mailer_from_settings

        self.pool: AsyncConnectionPool = stores.pg
        self.publisher = stores.publisher
        self.settings = stores.settings
        self.leaving_every_s = float(getattr(self.settings, "notifications_leaving_s", 3600.0))
        self.digest_every_s = float(getattr(self.settings, "digest_every_s", 3600.0))
        self.mailer = (
            mailer
            or stores.mailer
            or (mailer_from_settings(self.settings) if self.settings else None)
        )
        if self.mailer is None:
            log.info("no mailer (MGW_SMTP_HOST): daily notification digests are not sent")
        #: digests claimed by this process but maybe not folded yet: the next round must
        #: not send them again while the fold catches up
        self._claimed: set[tuple[str, date]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        due = {"leaving": 0.0, "digest": 0.0}
        every = {"leaving": self.leaving_every_s, "digest": self.digest_every_s}
        steps = {"leaving": self.sweep_leaving, "digest": self.send_digests}
        while not stop.is_set():
            for name, step in steps.items():
                if loop.time() >= due[name]:
                    try:
                        await step()
                    except Exception as exc:  # the next round finds the same work
                        log.warning("notifications %s step failed (%r); retrying", name, exc)
                    due[name] = loop.time() + every[name]
            await pause(max(0.0, min(due.values()) - loop.time()), stop)

    async def sweep_leaving(self, now: datetime | None = None) -> int:
        """Append a ``leaving`` notification for every watchlist title whose last offer on
        the user's services ends within the window; returns how many were appended."""
        now = now or utcnow()
        async with self.pool.connection() as conn:
            rows = await fetch_rows(
                conn, _LEAVING_SQL, {"now": now, "edge": now + rules.LEAVING_WINDOW}
            )
            ends: dict[tuple[str, str], list[tuple[datetime | None, str]]] = {}
            for uid, cid, platform, until in rows:
                ends.setdefault((uid, cid), []).append((until, platform))
            leaving = {}
            for k, offers in ends.items():
                last = rules.leaving_at([u for u, _ in offers], now)
                if last is not None:
                    leaving[k] = (last, max(offers, key=lambda o: (o[0], o[1]))[1])
            titles = await _titles(conn, sorted({cid for _, cid in leaving}))
            limits = await _limits(conn, sorted({uid for uid, _ in leaving}))
        events = []
        for (uid, cid), (last, platform) in sorted(leaving.items()):
            title, rating = titles.get(cid, (None, None))
            if not rules.may_notify(rating, limits.get(uid, ()), unrated_as=_unrated_as()):
                continue
            head, body = rules.leaving_text(title or "A title", platform, last)
            events.append(
                created(uid, rules.LEAVING, cid, head, body, content_id=cid, at=now,
                        data={"platform": platform, "leaving_at": iso_z(last)},
                        producer="notifications-sweeper")
            )  # fmt: skip
        if events:
            await self.publisher.publish_many(events)
        return len(events)

    async def send_digests(self, now: datetime | None = None) -> int:
        """Mail today's digest to every user who opted in, has a verified address, has
        unread notifications newer than the last digest and got none today. The day is
        claimed (``NotificationDigestSent``) before the mail goes: a crash in between
        loses that day's digest rather than sending it twice. Returns the mails sent."""
        from core.mail import MailError

        if self.mailer is None:
            return 0
        now = now or utcnow()
        day = now.date()
        key = await unsubscribe_key(self.settings)
        base = self.settings.base_url
        sender = self.settings.identity.mail_from
        sent = 0
        async with self.pool.connection() as conn:
            users = await fetch_rows(
                conn,
                "SELECT u.user_id, u.digest_seq, a.email, a.display_name"
                " FROM notification_users u JOIN users a USING (user_id)"
                " WHERE u.digest = 'daily' AND a.email_verified AND NOT a.locked"
                " AND (u.digest_day IS NULL OR u.digest_day < %s) ORDER BY u.user_id",
                (day,),
            )
        for uid, after, email, name in users:
            if (uid, day) in self._claimed:
                continue
            async with self.pool.connection() as conn:
                rows = await fetch_rows(
                    conn,
                    f"SELECT {_ITEM} FROM notifications WHERE user_id = %s AND read_at IS NULL"
                    " AND seq > %s ORDER BY seq DESC",
                    (uid, after),
                )
            if not rows:
                continue
            items = [item_json(*r) for r in rows]
            await self.publisher.publish(
                Event(
                    "NotificationDigestSent",
                    uid,
                    {"user_id": uid, "day": day.isoformat(), "through_seq": rows[0][-1],
                     "count": len(rows)},
                    event_id=notification_id(uid, "digest", day.isoformat()),
                    occurred_at=now,
                    producer="digest",
                )
            )  # fmt: skip
            self._claimed.add((uid, day))
            token = rules.unsubscribe_token(key, uid)
            msg = rules.digest_message(
                to=email,
                display_name=name,
                sender=sender,
                day=day,
                items=items[: rules.DIGEST_MAX_ITEMS],
                more=max(0, len(items) - rules.DIGEST_MAX_ITEMS),
                unsubscribe_link=f"{base}/v1/notifications/unsubscribe?token={token}",
                list_url=f"{base}/v1/me/notifications",
                now=now,
            )
            try:
                await self.mailer.send(msg)
            except MailError as exc:
                log.warning("digest for %s not sent: %s", uid, exc)
                continue
            sent += 1
        return sent


async def unsubscribe_key(settings: Any) -> bytes:
    """The key digest unsubscribe links are signed with, derived from the server secret
    (the file identity creates at start, or MGW_SECRET_KEY)."""
    from core.keys import server_secret
    from domain.identity.sealing import derive_key

    secret = await asyncio.to_thread(server_secret, settings.keys_dir, settings.identity.secret_key)
    return derive_key(secret, "digest-unsubscribe")


# -- queries -------------------------------------------------------------------------------


async def page(
    conn: AsyncConnection[Any], user_id: str, *, before: int | None, unread: bool, limit: int
) -> tuple[list[dict[str, Any]], bool]:
    """Newest first, from before position ``before`` (None: the newest); one more than
    ``limit`` is read to tell whether another page follows."""
    rows = await fetch_rows(
        conn,
        f"SELECT {_ITEM} FROM notifications WHERE user_id = %s AND seq < %s"
        " AND (NOT %s OR read_at IS NULL) ORDER BY seq DESC LIMIT %s",
        (user_id, before if before is not None else 2**62, unread, limit + 1),
    )
    return [item_json(*r) for r in rows[:limit]], len(rows) > limit


async def unread_count(conn: AsyncConnection[Any], user_id: str) -> int:
    rows = await fetch_rows(
        conn,
        "SELECT count(*) FROM notifications WHERE user_id = %s AND read_at IS NULL",
        (user_id,),
    )
    return int(rows[0][0])


async def preferences(conn: AsyncConnection[Any], user_id: str) -> dict[str, Any]:
    rows = await fetch_rows(
        conn, "SELECT kinds, digest FROM notification_users WHERE user_id = %s", (user_id,)
    )
    kinds, digest = rows[0] if rows else ({}, "off")
    return rules.preferences_view(kinds, digest)
