"""Entity resolution as a stream processor: PlatformTitleObserved in, ContentResolved out.

Its read model is its memory, ``resolution_members``: every platform record it has
placed, under its blocking key. A batch loads the members of the blocks it touches,
resolves its records in log order (domain/catalog/resolution.py decides), writes the
members back and emits one ContentResolved per record. Memory and checkpoint commit
together, so a redelivered batch resolves the same way; the emitted events carry ids
derived from the source record's position, so a repeated emission is recognisable.

Rules beyond the domain's:
- a record seen before keeps its content id (sticky), so a corrected title never
  moves a record that users may already have in a watchlist;
- an episode belongs to its series' entity: its id is derived from the series' id,
  season and episode, so episodes of one show on two platforms meet without fuzzing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.events import Event
from core.ids import derived_id
from core.topics import OBSERVATIONS
from domain.catalog import KINDS
from domain.catalog.resolution import Member, block_key, match, title_variants
from projections.base import Envelope, Output, PostgresOnly, RejectedEvent
from projections.bulk import stage
from projections.happened import happened_at_all

_MEMBER_COLS = (
    "platform, platform_id, block_key, cluster_id, kind, titles, year, runtime_min,"
    " imdb_id, tmdb_id, raw_hash"
)
_MEMBER_NAMES = [c.strip() for c in _MEMBER_COLS.split(",")]
_MEMBER_TYPES = ["text", "text", "text", "text", "text", "text[]", "int4", "int4", "text", "text",
                 "text"]  # fmt: skip
#: fields copied from the observation onto ContentResolved
_CARRIED = (
    "platform",
    "platform_id",
    "raw_hash",
    "kind",
    "title",
    "original_title",
    "year",
    "runtime_min",
    "genres",
    "overview",
    "language",
    "imdb_id",
    "tmdb_id",
    "season",
    "episode",
    "web_url",
    "app_url",
)


def observation_key(payload: dict[str, Any]) -> str:
    """The log key of a PlatformTitleObserved: the blocking key of its title (of its
    series' title, for an episode, so it is resolved next to its series)."""
    if payload["kind"] == "episode" and payload.get("series_title"):
        return block_key(payload["series_title"])
    return block_key(payload["title"])


def new_cluster_id(platform: str, platform_id: str) -> str:
    """A new entity is named after the record that founded it: deterministic."""
    return derived_id(f"content:{platform}:{platform_id}")


def episode_cluster_id(series_id: str, season: int, episode: int) -> str:
    return derived_id(f"episode:{series_id}:{season}:{episode}")


class _Block:
    """One blocking key's entities in memory for a batch, indexed by year: a record is
    compared only with entities that have a member within two years of it (or without
    a year); ``match`` then judges each such entity by all its members."""

    __slots__ = ("by_year", "clusters")

    def __init__(self) -> None:
        self.clusters: dict[str, list[Member]] = {}
        self.by_year: dict[int | None, set[str]] = {}

    def add(self, m: Member) -> None:
        self.clusters.setdefault(m.cluster_id, []).append(m)
        self.by_year.setdefault(m.year, set()).add(m.cluster_id)

    def remove(self, m: Member) -> None:
        members = self.clusters.get(m.cluster_id, [])
        if m in members:
            members.remove(m)  # by_year may keep the id: candidates are checked anyway

    def candidates(self, record: Member) -> list[Member]:
        if record.year is None:
            ids: set[str] = set(self.clusters)
        else:
            ids = set(self.by_year.get(None, ()))
            for y in range(record.year - 2, record.year + 3):
                ids |= self.by_year.get(y, set())
        return [m for cid in sorted(ids) for m in self.clusters.get(cid, ())]


class ResolutionProjector(PostgresOnly):
    name = "resolution"
    topics = (OBSERVATIONS.name,)
    tables = ("resolution_members",)

    def check(self, event: Envelope) -> None:
        if event.event_type != "PlatformTitleObserved":
            raise RejectedEvent(f"resolution does not handle {event.event_type}")
        p = event.payload
        if not p["title"].strip():
            raise RejectedEvent("title: must not be empty")
        if p["kind"] not in KINDS:
            raise RejectedEvent(f"kind: must be one of {', '.join(KINDS)}")
        if p["kind"] == "episode" and not p.get("series_platform_id"):
            raise RejectedEvent("series_platform_id: an episode needs its series")
        if not event.key:
            # The key is the blocking key: the title's (observation_key), or for a record
            # seen before, the key it was first seen under, so that all of a record's
            # events stay in one partition in order (streams/feeds.py keeps it).
            raise RejectedEvent(f"record key must be a blocking key like {observation_key(p)!r}")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> Output:
        blocks, by_ref = await self._load(conn, batch)
        touched: dict[tuple[str, str], tuple[str, Member, str]] = {}
        events: list[Event] = []
        times = happened_at_all(batch)
        for i, env in enumerate(batch):
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let the API in: `mgw up` serves from this loop
            p = env.payload
            ref = (p["platform"], p["platform_id"])
            key = env.key
            titles = title_variants(p["title"])
            if p.get("original_title"):
                titles += tuple(t for t in title_variants(p["original_title"]) if t not in titles)
            member = Member(
                p["platform"],
                p["platform_id"],
                "",
                p["kind"],
                titles or (p["title"].strip().casefold(),),
                p.get("year"),
                p.get("runtime_min"),
                p.get("imdb_id"),
                p.get("tmdb_id"),
            )
            known = by_ref.get(ref)
            method, score, matched, series_id = "new", None, None, None
            if p["kind"] == "episode":
                series_ref = (p["platform"], p["series_platform_id"])
                series = by_ref.get(series_ref)
                series_id = series[0].cluster_id if series else new_cluster_id(*series_ref)
                if p.get("season") is not None and p.get("episode") is not None:
                    member.cluster_id = episode_cluster_id(series_id, p["season"], p["episode"])
                    method = "series"
                elif known:
                    member.cluster_id, method = known[0].cluster_id, "known_record"
                else:
                    member.cluster_id = new_cluster_id(*ref)
            elif known:
                member.cluster_id, method = known[0].cluster_id, "known_record"
            else:
                block = blocks.get(key)
                found = match(member, block.candidates(member)) if block else None
                if found is None:
                    member.cluster_id = new_cluster_id(*ref)
                else:
                    member.cluster_id, method, score = found.cluster_id, found.method, found.score
                    matched = found.member
            if known and known[1] in blocks:
                blocks[known[1]].remove(known[0])
            blocks.setdefault(key, _Block()).add(member)
            by_ref[ref] = (member, key)
            touched[ref] = (key, member, p["raw_hash"])
            events.append(self._resolved(env, times[i], member, method, score, matched, series_id))
        await self._store(conn, touched)
        return Output(None, events)

    @staticmethod
    def _resolved(
        env: Envelope,
        at: datetime,
        member: Member,
        method: str,
        score: float | None,
        matched: Member | None,
        series_id: str | None,
    ) -> Event:
        p = env.payload
        payload = {f: p.get(f) for f in _CARRIED}
        payload.update(
            content_id=member.cluster_id,
            method=method,
            score=score,
            matched_platform=matched.platform if matched else None,
            matched_platform_id=matched.platform_id if matched else None,
            series_id=series_id,
        )
        return Event(
            "ContentResolved",
            member.cluster_id,
            payload,
            event_id=derived_id(f"resolved:{env.topic}:{env.partition}:{env.offset}"),
            occurred_at=at,
            producer="resolution",
        )

    async def _load(
        self, conn: AsyncConnection[Any], batch: Sequence[Envelope]
    ) -> tuple[dict[str, _Block], dict[tuple[str, str], tuple[Member, str]]]:
        """The members the batch can meet: its own records (known or not), its episodes'
        series, and every entity of its blocks with a member of a compatible year or
        with a shared external id; such entities come whole, because an entity is
        judged by all its members. A block of a common word ("love") holds thousands
        of titles, and loading blocks whole would make each batch read most of them."""
        refs = {(e.payload["platform"], e.payload["platform_id"]) for e in batch}
        refs |= {
            (e.payload["platform"], e.payload["series_platform_id"])
            for e in batch
            if e.payload.get("series_platform_id")
        }
        probes = sorted({(e.key, e.payload.get("year") or 0) for e in batch})
        ids = sorted(
            {e.payload[f] for e in batch for f in ("imdb_id", "tmdb_id") if e.payload.get(f)}
        )
        cur = await conn.execute(
            f"WITH candidates AS ("
            " SELECT DISTINCT m.cluster_id FROM resolution_members m"
            " JOIN unnest(%(keys)s::text[], %(years)s::int[]) AS u(k, y) ON m.block_key = u.k"
            " AND (u.y = 0 OR m.year IS NULL OR m.year BETWEEN u.y - 2 AND u.y + 2)"
            " UNION SELECT cluster_id FROM resolution_members WHERE imdb_id = ANY(%(ids)s)"
            " UNION SELECT cluster_id FROM resolution_members WHERE tmdb_id = ANY(%(ids)s))"
            f" SELECT {_MEMBER_COLS} FROM resolution_members"
            " WHERE cluster_id IN (SELECT cluster_id FROM candidates)"
            f" UNION SELECT {_MEMBER_COLS} FROM resolution_members"
            " WHERE (platform, platform_id) IN"
            " (SELECT * FROM unnest(%(plats)s::text[], %(pids)s::text[]))"
            " ORDER BY 4, 1, 2",  # by entity, then record: a stable order, so ties are too
            {
                "keys": [k for k, _ in probes],
                "years": [y for _, y in probes],
                "ids": ids,
                "plats": [r[0] for r in refs],
                "pids": [r[1] for r in refs],
            },
        )
        blocks: dict[str, _Block] = {}
        by_ref: dict[tuple[str, str], tuple[Member, str]] = {}
        for (
            plat,
            pid,
            bkey,
            cid,
            kind,
            titles,
            year,
            runtime,
            imdb,
            tmdb,
            _,
        ) in await cur.fetchall():
            m = Member(plat, pid, cid, kind, tuple(titles), year, runtime, imdb, tmdb)
            blocks.setdefault(bkey, _Block()).add(m)
            by_ref[(plat, pid)] = (m, bkey)
        return blocks, by_ref

    async def _store(
        self, conn: AsyncConnection[Any], touched: dict[tuple[str, str], tuple[str, Member, str]]
    ) -> None:
        if not touched:
            return
        rows = [
            (
                m.platform,
                m.platform_id,
                key,
                m.cluster_id,
                m.kind,
                list(m.titles),
                m.year,
                m.runtime_min,
                m.imdb_id,
                m.tmdb_id,
                raw_hash,
            )  # fmt: skip
            for key, m, raw_hash in touched.values()
        ]
        await stage(conn, "resolution_batch", "resolution_members", _MEMBER_NAMES, _MEMBER_TYPES,
                    rows)  # fmt: skip
        await conn.execute(
            f"INSERT INTO resolution_members ({_MEMBER_COLS})"
            f" SELECT {_MEMBER_COLS} FROM resolution_batch"
            " ON CONFLICT (platform, platform_id) DO UPDATE SET block_key = EXCLUDED.block_key,"
            " cluster_id = EXCLUDED.cluster_id, kind = EXCLUDED.kind, titles = EXCLUDED.titles,"
            " year = EXCLUDED.year, runtime_min = EXCLUDED.runtime_min,"
            " imdb_id = EXCLUDED.imdb_id, tmdb_id = EXCLUDED.tmdb_id,"
            " raw_hash = EXCLUDED.raw_hash"
        )


# -- queries -----------------------------------------------------------------


async def known_records(
    pg: AsyncConnectionPool, platform: str, ids: Sequence[str] | None = None
) -> dict[str, tuple[str, str]]:
    """platform_id -> (raw_hash, log key) of the records of one platform (all, or
    ``ids``) resolution has seen. A record keeps its first key for life: all its
    events then sit in one partition, in order, whatever its title becomes."""
    async with pg.connection() as conn:
        cur = await conn.execute(
            "SELECT platform_id, raw_hash, block_key FROM resolution_members"
            " WHERE platform = %s AND (%s::text[] IS NULL OR platform_id = ANY(%s::text[]))",
            (platform, ids, ids),
        )
        return {pid: (h, k) for pid, h, k in await cur.fetchall()}
