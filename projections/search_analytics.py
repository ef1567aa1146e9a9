"""Search analytics read model: what people search for and which results they open.

Per UTC day:

* ``search_queries_daily`` (day, normalized_query): searches, zero-result searches,
  clicks, and clicked searches (searches with at least one click);
* ``search_position_daily`` (day, position): impressions and clicks. Each search counts
  one impression for each of positions 1..min(len(result_ids), 10) of its first page;
  a click at position p counts for p, positions past 10 included (they have clicks but
  no impressions).

``searches`` keeps one row per search_id, so a click finds its query and day. A click
counts on the day of its search (a search at 23:59 clicked at 00:01 stays one day's
story); a click whose search was never seen still counts in ``search_position_daily``
on its own day, but in no query's row (there is no query to credit). Only the first
SearchPerformed with a search_id counts; a repeat (a retried publish) changes nothing.
Every click event counts, repeated clicks on one result included.

A search and its clicks share a key (search_id), hence one partition, so whether a
click's search was "seen" is decided by log order: the same on every replay, wherever
batch boundaries fall. Redelivered batches are skipped by the pipeline's checkpoint,
which commits in the same transaction as these rows, so nothing is counted twice.

Normalized queries longer than ``QUERY_KEY_MAX`` characters are cut to that length: the
key must fit a btree index entry, and queries that long are noise in these reports.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.topics import SEARCHES
from projections.base import Envelope, PostgresOnly, RejectedEvent
from projections.bulk import stage

QUERY_KEY_MAX = 200
IMPRESSION_DEPTH = 10  # first-page positions that count as seen
_TYPES = frozenset(SEARCHES.event_types)


@dataclass(slots=True)
class _Seen:
    day: date
    query: str
    clicks: int


@dataclass(slots=True)
class _Fold:
    """What one batch adds, before it is written."""

    new_searches: dict[str, tuple[date, str, int, datetime]] = field(default_factory=dict)
    queries: dict[tuple[date, str], list[int]] = field(default_factory=dict)
    positions: dict[tuple[date, int], list[int]] = field(default_factory=dict)
    clicked: dict[str, int] = field(default_factory=dict)  # search_id -> clicks added

    def query(self, day: date, q: str) -> list[int]:  # searches, zero, clicks, clicked
        return self.queries.setdefault((day, q), [0, 0, 0, 0])

    def position(self, day: date, pos: int) -> list[int]:  # impressions, clicks
        return self.positions.setdefault((day, pos), [0, 0])


def _day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def query_key(normalized_query: str) -> str:
    return normalized_query[:QUERY_KEY_MAX]


class SearchAnalyticsProjector(PostgresOnly):
    name = "search_analytics"
    topics: tuple[str, ...] = (SEARCHES.name,)
    tables: tuple[str, ...] = ("searches", "search_queries_daily", "search_position_daily")

    def check(self, event: Envelope) -> None:
        if event.event_type not in _TYPES:
            raise RejectedEvent(f"search_analytics does not handle {event.event_type}")
        p = event.payload
        if not p["search_id"]:
            raise RejectedEvent("search_id: must be non-empty")
        if event.key != p["search_id"]:
            raise RejectedEvent("record key must be the search_id")
        texts = [p["search_id"]]
        if event.event_type == "SearchPerformed":
            if p["result_count"] < 0:
                raise RejectedEvent("result_count: must be 0 or more")
            texts.append(p["normalized_query"])
        else:
            if p["position"] < 1:
                raise RejectedEvent("position: must be 1 or more (positions are 1-based)")
            if not p["content_id"]:
                raise RejectedEvent("content_id: must be non-empty")
        if any("\x00" in t for t in texts):
            raise RejectedEvent("text must not contain NUL characters")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        events = sorted(batch, key=lambda e: (e.partition, e.offset))
        ids = list({e.payload["search_id"] for e in events})
        cur = await conn.execute(
            "SELECT search_id, day, normalized_query, clicks FROM searches"
            " WHERE search_id = ANY(%s)",
            (ids,),
        )
        known = {sid: _Seen(day, q, n) for sid, day, q, n in await cur.fetchall()}
        fold = _Fold()
        for e in events:
            p = e.payload
            if e.event_type == "SearchPerformed":
                _add_search(fold, known, p)
            else:
                _add_click(fold, known, p)
        await self._write(conn, fold, known)

    async def _write(
        self, conn: AsyncConnection[Any], fold: _Fold, known: dict[str, _Seen]
    ) -> None:
        if fold.new_searches:
            rows = [
                (sid, day, q, n, at, known[sid].clicks)
                for sid, (day, q, n, at) in fold.new_searches.items()
            ]
            cols = ("search_id", "day", "normalized_query", "result_count", "at", "clicks")
            types = ("text", "date", "text", "int4", "timestamptz", "int4")
            await stage(conn, "searches_batch", "searches", cols, types, rows)
            await conn.execute(
                "INSERT INTO searches SELECT * FROM searches_batch ON CONFLICT DO NOTHING"
            )
        old = sorted((sid, n) for sid, n in fold.clicked.items() if sid not in fold.new_searches)
        if old:
            await conn.execute(
                "UPDATE searches s SET clicks = s.clicks + u.n"
                " FROM unnest(%s::text[], %s::int[]) AS u(search_id, n)"
                " WHERE s.search_id = u.search_id",
                ([sid for sid, _ in old], [n for _, n in old]),
            )
        # Sorted keys: shards of this projector add to shared day rows, so they must
        # take the row locks in one order.
        queries = sorted(fold.queries.items())
        if queries:
            await conn.execute(
                "INSERT INTO search_queries_daily AS t (day, normalized_query, searches,"
                " zero_result_searches, clicks, clicked_searches)"
                " SELECT * FROM unnest(%s::date[], %s::text[], %s::bigint[], %s::bigint[],"
                " %s::bigint[], %s::bigint[]) ORDER BY 1, 2"
                " ON CONFLICT (day, normalized_query) DO UPDATE SET"
                " searches = t.searches + EXCLUDED.searches,"
                " zero_result_searches = t.zero_result_searches + EXCLUDED.zero_result_searches,"
                " clicks = t.clicks + EXCLUDED.clicks,"
                " clicked_searches = t.clicked_searches + EXCLUDED.clicked_searches",
                (
                    [k[0] for k, _ in queries],
                    [k[1] for k, _ in queries],
                    *([v[i] for _, v in queries] for i in range(4)),
                ),
            )
        positions = sorted(fold.positions.items())
        if positions:
            await conn.execute(
                "INSERT INTO search_position_daily AS t (day, position, impressions, clicks)"
                " SELECT * FROM unnest(%s::date[], %s::int[], %s::bigint[], %s::bigint[])"
                " ORDER BY 1, 2"
                " ON CONFLICT (day, position) DO UPDATE SET"
                " impressions = t.impressions + EXCLUDED.impressions,"
                " clicks = t.clicks + EXCLUDED.clicks",
                (
                    [k[0] for k, _ in positions],
                    [k[1] for k, _ in positions],
                    [v[0] for _, v in positions],
                    [v[1] for _, v in positions],
                ),
            )


def _add_search(fold: _Fold, known: dict[str, _Seen], p: dict[str, Any]) -> None:
    sid = p["search_id"]
    if sid in known:
        return  # a repeat of a search already counted
    day, q = _day(p["at"]), query_key(p["normalized_query"])
    known[sid] = _Seen(day, q, 0)
    fold.new_searches[sid] = (day, q, p["result_count"], p["at"])
    row = fold.query(day, q)
    row[0] += 1
    if p["result_count"] == 0:
        row[1] += 1
    for pos in range(1, min(len(p["result_ids"]), IMPRESSION_DEPTH) + 1):
        fold.position(day, pos)[0] += 1


def _add_click(fold: _Fold, known: dict[str, _Seen], p: dict[str, Any]) -> None:
    sid = p["search_id"]
    seen = known.get(sid)
    if seen is None:  # never seen: only the position's click count can take it
        fold.position(_day(p["at"]), p["position"])[1] += 1
        return
    fold.position(seen.day, p["position"])[1] += 1
    row = fold.query(seen.day, seen.query)
    row[2] += 1
    if seen.clicks == 0:
        row[3] += 1
    seen.clicks += 1
    fold.clicked[sid] = fold.clicked.get(sid, 0) + 1


# -- queries -----------------------------------------------------------------


def _ratio(num: int, den: int) -> float | None:
    return round(num / den, 4) if den else None


@dataclass(frozen=True, slots=True)
class QueryStats:
    query: str
    searches: int
    zero_result_searches: int
    clicks: int
    clicked_searches: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "searches": self.searches,
            "zero_result_searches": self.zero_result_searches,
            "clicks": self.clicks,
            "clicked_searches": self.clicked_searches,
            "ctr": _ratio(self.clicked_searches, self.searches),
        }


@dataclass(frozen=True, slots=True)
class PositionStats:
    position: int
    impressions: int
    clicks: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "position": self.position,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "ctr": _ratio(self.clicks, self.impressions),
        }


@dataclass(frozen=True, slots=True)
class Totals:
    searches: int
    zero_result_searches: int
    #: every click in the range, clicks on searches never seen included
    clicks: int
    clicked_searches: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "searches": self.searches,
            "zero_result_searches": self.zero_result_searches,
            "clicks": self.clicks,
            "clicked_searches": self.clicked_searches,
            "ctr": _ratio(self.clicked_searches, self.searches),
        }


@dataclass(frozen=True, slots=True)
class SearchReport:
    start: date
    end: date
    totals: Totals
    top_queries: list[QueryStats]
    zero_result_queries: list[QueryStats]
    ctr_by_position: list[PositionStats]


_BY_QUERY = (
    "SELECT normalized_query, sum(searches)::bigint, sum(zero_result_searches)::bigint,"
    " sum(clicks)::bigint, sum(clicked_searches)::bigint"
    " FROM search_queries_daily WHERE day BETWEEN %s AND %s GROUP BY normalized_query"
)


async def search_report(
    pg: AsyncConnectionPool, start: date, end: date, *, limit: int = 20
) -> SearchReport:
    """Days ``start``..``end`` (UTC, inclusive): totals, the ``limit`` most searched
    queries, the ``limit`` queries with the most zero-result searches, and click-through
    by position (clicks / impressions; positions past the first page have no
    impressions, so their ctr is None)."""
    span = (start, end)
    async with pg.connection() as conn:
        cur = await conn.execute(
            f"{_BY_QUERY} HAVING sum(searches) > 0"
            " ORDER BY sum(searches) DESC, normalized_query LIMIT %s",
            (*span, limit),
        )
        top = [QueryStats(*r) for r in await cur.fetchall()]
        cur = await conn.execute(
            f"{_BY_QUERY} HAVING sum(zero_result_searches) > 0"
            " ORDER BY sum(zero_result_searches) DESC, normalized_query LIMIT %s",
            (*span, limit),
        )
        zero = [QueryStats(*r) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT position, sum(impressions)::bigint, sum(clicks)::bigint"
            " FROM search_position_daily WHERE day BETWEEN %s AND %s"
            " GROUP BY position ORDER BY position",
            span,
        )
        positions = [PositionStats(*r) for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT coalesce(sum(searches), 0)::bigint,"
            " coalesce(sum(zero_result_searches), 0)::bigint,"
            " coalesce(sum(clicked_searches), 0)::bigint"
            " FROM search_queries_daily WHERE day BETWEEN %s AND %s",
            span,
        )
        row = await cur.fetchone()
    assert row is not None
    clicks = sum(p.clicks for p in positions)
    totals = Totals(row[0], row[1], clicks, row[2])
    return SearchReport(start, end, totals, top, zero, positions)
