"""The recommender's input: what each user did with each title, and one activity timeline.

The ``interactions`` projector reads three topics:

* ``activity``: impressions, clicks, detail views, trailers, shares, not interested and
  more like this, as apps report them (``POST /v1/activity``, recommendation feedback);
* ``playback.events``: any play of a title marks it started (the user is watching it);
  a PlaybackStarted is a play start on the timeline;
* ``library.events``: watches recorded (finished), history removed, ratings, watchlist.

``rec_interactions`` keeps the facts per (user, title); domain/recs/signals.py weighs
them. ``activity_events`` keeps every activity event plus play starts and completions,
keyed by (user, event id): what experiments measure, and what makes a repeated client
event id (or a repeated watch op) count once. Facts follow log order per topic; the
library's own conflict rules (HLC stamps) decide the library's state, and a rare
out-of-order watchlist toggle here only nudges a weight until the next change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from core.topics import ACTIVITY, LIBRARY, PLAYBACK
from projections.base import Envelope, PostgresOnly, RejectedEvent, Stores

MAX_ID = 128
MAX_SURFACE = 64
CLICK_KINDS = frozenset({"click", "detail_view", "trailer", "share"})
_LIBRARY_USED = frozenset(
    {
        "WatchRecorded",
        "WatchesRemoved",
        "RatingSet",
        "RatingRemoved",
        "WatchlistItemAdded",
        "WatchlistItemRemoved",
    }
)


@dataclass(slots=True)
class _Delta:
    last_at: datetime
    finished_reset: bool = False
    finished_add: int = 0
    started: bool | None = None
    rating_set: bool = False
    rating: int | None = None
    watchlisted: bool | None = None
    clicks: int = 0
    impressions: int = 0
    not_interested: bool | None = None
    more_like_this: bool | None = None


def _timeline_row(e: Envelope) -> tuple[str, str, str, str, str, datetime] | None:
    """The activity_events row an event adds, if any: (user, event id, kind, content,
    surface, at). Ids of derived rows come from the source, so a replay makes the same."""
    p = e.payload
    if e.event_type == "ActivityRecorded":
        return (p["user_id"], p["event_id"], p["kind"], p["content_id"], p["surface"],
                p["occurred_at"])  # fmt: skip
    if e.event_type == "WatchRecorded":
        return (p["user_id"], f"watch:{p['op_id']}", "completion", p["content_id"], "",
                p["watched_at"])  # fmt: skip
    if e.event_type == "PlaybackStarted":
        source = e.event_id or f"{e.topic}:{e.partition}:{e.offset}"
        return (p["user_id"], f"play:{source}", "play_start", p["content_id"], "",
                p["occurred_at"])  # fmt: skip
    return None


class InteractionsProjector(PostgresOnly):
    name = "interactions"
    topics: tuple[str, ...] = (ACTIVITY.name, PLAYBACK.name, LIBRARY.name)
    tables: tuple[str, ...] = ("rec_interactions", "activity_events")

    def check(self, event: Envelope) -> None:
        p = event.payload
        if event.event_type == "ActivityRecorded":
            for f in ("user_id", "event_id", "content_id"):
                if not 0 < len(p[f]) <= MAX_ID:
                    raise RejectedEvent(f"{f}: must be 1 to {MAX_ID} characters")
            if len(p["surface"]) > MAX_SURFACE:
                raise RejectedEvent(f"surface: at most {MAX_SURFACE} characters")
            if event.key != p["user_id"]:
                raise RejectedEvent("record key must be the user_id")
            if any("\x00" in p[f] for f in ("user_id", "event_id", "content_id", "surface")):
                raise RejectedEvent("text must not contain NUL characters")
            return
        if event.event_type in _LIBRARY_USED or event.event_type.startswith("Playback"):
            if not p.get("user_id") or not p.get("content_id"):
                raise RejectedEvent("user_id and content_id must be non-empty")
            if event.event_type == "RatingSet" and not 1 <= p["rating"] <= 10:
                raise RejectedEvent("rating: must be 1 to 10")
        # other library events (services, settings, up-next hides) say nothing of taste

    def background(self, stores: Stores) -> Any:
        """Where the projector runs, so does the training (projections/recs_training.py)."""
        from projections.recs_training import Trainer

        if stores.settings is None or not stores.settings.recs_training:
            return None
        return Trainer(stores.pg, stores.settings)

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        timeline: dict[tuple[str, str], tuple[str, str, str, str, str, datetime]] = {}
        for e in batch:
            row = _timeline_row(e)
            if row is not None:
                timeline.setdefault((row[0], row[1]), row)
        fresh: set[tuple[str, str]] = set()
        if timeline:
            rows = sorted(timeline.values())
            cur = await conn.execute(
                "INSERT INTO activity_events (user_id, event_id, kind, content_id, surface, at)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::text[], %s::timestamptz[])"
                " ON CONFLICT DO NOTHING RETURNING user_id, event_id",
                tuple([r[i] for r in rows] for i in range(6)),
            )
            fresh = {(u, i) for u, i in await cur.fetchall()}
        deltas = _fold(batch, fresh)
        if deltas:
            await _write(conn, deltas)


def _fold(batch: Sequence[Envelope], fresh: set[tuple[str, str]]) -> dict[tuple[str, str], _Delta]:
    deltas: dict[tuple[str, str], _Delta] = {}
    for e in batch:
        t, p = e.event_type, e.payload
        if t not in _LIBRARY_USED and t != "ActivityRecorded" and not t.startswith("Playback"):
            continue
        row = _timeline_row(e)
        if row is not None:
            key = (row[0], row[1])
            if key not in fresh:
                continue  # recorded before: a repeated client event or watch op
            fresh.discard(key)  # a second copy in this batch counts no more
        at: datetime = row[5] if row is not None else e.happened_at
        k = (p["user_id"], p["content_id"])
        d = deltas.get(k)
        if d is None:
            d = deltas[k] = _Delta(last_at=at)
        else:
            d.last_at = max(d.last_at, at)
        _add(d, t, p)
    return deltas


def _add(d: _Delta, t: str, p: dict[str, Any]) -> None:
    if t == "ActivityRecorded":
        kind = p["kind"]
        if kind == "impression":
            d.impressions += 1
        elif kind in CLICK_KINDS:
            d.clicks += 1
        elif kind == "not_interested":
            d.not_interested, d.more_like_this = True, False
        elif kind == "more_like_this":
            d.more_like_this, d.not_interested = True, False
        elif kind == "interest_restored":  # "not interested" taken back
            d.not_interested, d.more_like_this = False, False
    elif t.startswith("Playback"):
        d.started = True
    elif t == "WatchRecorded":
        d.finished_add += 1
    elif t == "WatchesRemoved":  # "I did not watch it": neither finished nor started
        d.finished_reset, d.finished_add, d.started = True, 0, False
    elif t == "RatingSet":
        d.rating_set, d.rating = True, p["rating"]
    elif t == "RatingRemoved":
        d.rating_set, d.rating = True, None
    elif t == "WatchlistItemAdded":
        d.watchlisted = True
    elif t == "WatchlistItemRemoved":
        d.watchlisted = False


async def _write(conn: AsyncConnection[Any], deltas: dict[tuple[str, str], _Delta]) -> None:
    # sorted keys: shards of this projector touch shared rows, so they lock in one order
    items = sorted(deltas.items())
    users = [k[0] for k, _ in items]
    titles = [k[1] for k, _ in items]
    ats = [d.last_at for _, d in items]
    await conn.execute(
        "INSERT INTO rec_interactions (user_id, content_id, last_at)"
        " SELECT * FROM unnest(%s::text[], %s::text[], %s::timestamptz[])"
        " ON CONFLICT DO NOTHING",
        (users, titles, ats),
    )
    await conn.execute(
        "UPDATE rec_interactions t SET"
        " finished = CASE WHEN x.reset THEN x.fa ELSE t.finished + x.fa END,"
        " started = coalesce(x.st, t.started),"
        " rating = CASE WHEN x.rset THEN x.r ELSE t.rating END,"
        " watchlisted = coalesce(x.w, t.watchlisted),"
        " clicks = t.clicks + x.cl, impressions = t.impressions + x.im,"
        " not_interested = coalesce(x.ni, t.not_interested),"
        " more_like_this = coalesce(x.ml, t.more_like_this),"
        " last_at = greatest(t.last_at, x.at), updated_at = now()"
        " FROM unnest(%s::text[], %s::text[], %s::bool[], %s::int[], %s::bool[], %s::bool[],"
        " %s::smallint[], %s::bool[], %s::int[], %s::int[], %s::bool[], %s::bool[],"
        " %s::timestamptz[]) AS x(u, c, reset, fa, st, rset, r, w, cl, im, ni, ml, at)"
        " WHERE t.user_id = x.u AND t.content_id = x.c",
        (
            users,
            titles,
            [d.finished_reset for _, d in items],
            [d.finished_add for _, d in items],
            [d.started for _, d in items],
            [d.rating_set for _, d in items],
            [d.rating for _, d in items],
            [d.watchlisted for _, d in items],
            [d.clicks for _, d in items],
            [d.impressions for _, d in items],
            [d.not_interested for _, d in items],
            [d.more_like_this for _, d in items],
            ats,
        ),
    )
