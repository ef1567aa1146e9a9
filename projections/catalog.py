"""The canonical catalog: ``platform_titles`` (every source record), ``content`` (one
merged row per entity), ``content_merges`` (ids that now read as another), and the
Qdrant ``content`` collection.

Sources are editorial upserts (ContentUpserted, from the API) and platform records as
entity resolution placed them (ContentResolved). Resolution compares records only
within a blocking key; evidence that crosses blocks joins entities here: the same
IMDb or TMDB id on two entities, or one platform record seen in two. Joining is
union-find whose survivor depends only on the set joined (domain rule below), so the
same log always leaves the same ids. Each join is emitted as ContentMerged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from core.events import Event
from core.ids import derived_id
from core.topics import CATALOG, RESOLUTION
from domain.catalog import check_content, normalize_genres
from domain.catalog.canonical import EntityUnion, SourceRecord, merge
from domain.identity.ratings import level, normalize_rating
from projections.base import Envelope, Output, PostgresOnly, RejectedEvent, fetch_rows
from projections.bulk import stage
from projections.happened import happened_at_all

_SOURCE_COLS = (
    "platform",
    "platform_id",
    "cluster_id",
    "content_id",
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
    "series_id",
    "season",
    "episode",
    "web_url",
    "app_url",
    "first_seen",
    "updated_at",
    "people",
    "keywords",
    "rating",
)
_SOURCE_TYPES = [
    "text", "text", "text", "text", "text", "text", "text", "text", "int4", "int4", "text[]",
    "text", "text", "text", "text", "text", "int4", "int4", "text", "text", "timestamptz",
    "timestamptz", "text[]", "text[]", "text",
]  # fmt: skip
_CONTENT_COLS = (
    "content_id",
    "kind",
    "title",
    "original_title",
    "year",
    "runtime_min",
    "genres",
    "overview",
    "imdb_id",
    "tmdb_id",
    "series_id",
    "season",
    "episode",
    "updated_at",
    "platforms",
    "source_count",
    "completeness",
    "agreement",
    "first_seen",
    "rating",
)
_CONTENT_TYPES = [
    "text", "text", "text", "text", "int4", "int4", "text[]", "text", "text", "text", "text",
    "int4", "int4", "timestamptz", "text[]", "int4", "float4", "float4", "timestamptz", "text",
]  # fmt: skip
EDITORIAL = "editorial"
#: a source event as apply reads it: (platform, platform_id), cluster id, fields, the
#: record, when it happened
_Version = tuple[tuple[str, str], str, dict[str, Any], Envelope, datetime]


def _source_row(e: Envelope) -> tuple[tuple[str, str], str, dict[str, Any]]:
    """(platform, platform_id), cluster id and fields of a source event."""
    p = e.payload
    if e.event_type == "ContentUpserted":
        ext = p.get("external_ids") or {}
        fields = {
            **{k: p.get(k) for k in ("kind", "original_title", "year", "runtime_min")},
            "title": p["title"].strip(),
            "genres": normalize_genres(p.get("genres") or []),
            "overview": p.get("overview"),
            "language": None,
            "imdb_id": ext.get("imdb"),
            "tmdb_id": ext.get("tmdb"),
            "series_id": p.get("series_id"),
            "season": p.get("season"),
            "episode": p.get("episode"),
            "web_url": None,
            "app_url": None,
            "raw_hash": None,
            # search reads these from here (projections/search_index.py); the canonical
            # row does not carry them
            "people": [x.strip() for x in p.get("people") or () if x.strip()],
            "keywords": [x.strip() for x in p.get("keywords") or () if x.strip()],
            # v3; canonical spelling, and a rating nobody knows counts as none (unrated,
            # which parental limits treat as the strictest unless MGW_UNRATED_AS=allowed)
            "rating": normalize_rating(p.get("rating")),
        }
        return (EDITORIAL, p["content_id"]), p["content_id"], fields
    fields = {
        k: p.get(k)
        for k in (
            "raw_hash", "kind", "original_title", "year", "runtime_min", "overview", "language",
            "imdb_id", "tmdb_id", "series_id", "season", "episode", "web_url", "app_url",
        )
    }  # fmt: skip
    fields["title"] = p["title"].strip()
    fields["genres"] = normalize_genres(p.get("genres") or [])
    fields["people"] = []
    fields["keywords"] = []
    fields["rating"] = normalize_rating(p.get("rating"))  # platform records carry none yet
    return (p["platform"], p["platform_id"]), p["content_id"], fields


def strictest_rating(ratings: Sequence[str | None]) -> str | None:
    """An entity's rating: the strictest (highest on the ladder) its sources give, so two
    sources that disagree never loosen a parental limit; None when no source rates it."""
    known = [r for r in ratings if r is not None]
    return max(known, key=lambda r: (level(r), r)) if known else None


def _ext(fields: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s, fields[f"{s}_id"]) for s in ("imdb", "tmdb") if fields.get(f"{s}_id")]


def _reason(
    loser: str, survivor: str, reasons: dict[str, tuple[str, datetime]], default: datetime
) -> tuple[str, datetime]:
    return reasons.get(loser, (f"joined with {survivor}", default))


class CatalogProjector(PostgresOnly):
    """The canonical catalog: every source record (editorial upserts from the API,
    platform records as entity resolution placed them) folded into one content row
    per entity, with entities joined when later evidence links them."""

    name = "catalog"
    topics = (CATALOG.name, RESOLUTION.name)
    tables = ("content", "platform_titles", "content_merges")
    # vectors are the search indexer's (projections/search_index.py), not this projector's
    #: merges need every entity in view: one owner at a time
    shardable = False
    #: what the replay checksum compares of content_merges: which id reads as which (why
    #: and when they were joined depends on where batch boundaries fell)
    checksum_columns = {"content_merges": ("merged_id", "into_id")}

    def check(self, event: Envelope) -> None:
        if event.event_type == "ContentUpserted":
            violation = check_content(event.payload)
            if violation:
                raise RejectedEvent(f"{violation.field}: {violation.message}")
            if event.key and event.key != event.payload["content_id"]:
                raise RejectedEvent("record key must equal content_id")
        elif event.event_type == "ContentResolved":
            if not event.payload["title"].strip():
                raise RejectedEvent("title: must not be empty")
        elif event.event_type != "ContentMerged":
            raise RejectedEvent(f"catalog does not handle {event.event_type}")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> Output:
        # Merges need every entity in view: one applier at a time, even when two
        # processes own different partitions (an ingest catching up beside `mgw up`).
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('mgw:projector:catalog'))")
        versions: list[_Version] = []
        times = happened_at_all(batch)  # once per record: each env.happened_at parses
        for e, at in zip(batch, times, strict=True):
            if e.event_type == "ContentMerged":
                continue  # this projector emitted it, and applied it then
            ref, cluster, fields = _source_row(e)
            versions.append((ref, cluster, fields, e, at))
        if not versions:
            return Output([], [])
        # Rows follow each record's last version; evidence comes from every version, so
        # where batch boundaries fall never changes what gets joined.
        latest = {ref: (cluster, fields, at) for ref, cluster, fields, _, at in versions}
        first: dict[tuple[str, str], datetime] = {}
        for ref, _, _, _, at in versions:
            first.setdefault(ref, at)  # first_seen must not depend on batching
        refs = list(latest)
        clusters = sorted(
            {v[1] for v in versions} | {v[2]["series_id"] for v in versions if v[2]["series_id"]}
        )
        existing = await fetch_rows(
            conn,
            "SELECT platform, platform_id, cluster_id, content_id, first_seen FROM platform_titles"
            " WHERE (platform, platform_id) IN (SELECT * FROM unnest(%s::text[], %s::text[]))",
            ([r[0] for r in refs], [r[1] for r in refs]),
        )
        old = {(r[0], r[1]): r for r in existing}
        canon = dict(
            await fetch_rows(
                conn,
                "SELECT DISTINCT cluster_id, content_id FROM platform_titles"
                " WHERE cluster_id = ANY(%s)",
                (clusters,),
            )
        )
        ids = {(s, v, f["kind"]) for _, _, f, _, _ in versions for s, v in _ext(f)}
        imdb = sorted({(v, k) for s, v, k in ids if s == "imdb"})
        tmdb = sorted({(v, k) for s, v, k in ids if s == "tmdb"})
        linked = await fetch_rows(  # two index lookups: an OR across columns would scan
            conn,
            "SELECT DISTINCT 'imdb', t.imdb_id, t.kind, t.content_id FROM platform_titles t"
            " JOIN unnest(%s::text[], %s::text[]) AS u(v, k) ON t.imdb_id = u.v AND t.kind = u.k"
            " UNION SELECT DISTINCT 'tmdb', t.tmdb_id, t.kind, t.content_id FROM platform_titles t"
            " JOIN unnest(%s::text[], %s::text[]) AS u(v, k) ON t.tmdb_id = u.v AND t.kind = u.k",
            (
                [v for v, _ in imdb],
                [k for _, k in imdb],
                [v for v, _ in tmdb],
                [k for _, k in tmdb],
            ),
        )
        nodes = {canon.get(v[1], v[1]) for v in versions}
        nodes |= {r[3] for r in existing} | {r[3] for r in linked}
        editorial = {r[1] for r in latest if r[0] == EDITORIAL}
        editorial |= {
            r[0]
            for r in await fetch_rows(
                conn,
                "SELECT platform_id FROM platform_titles WHERE platform = %s"
                " AND platform_id = ANY(%s)",
                (EDITORIAL, sorted(nodes)),
            )
        }
        comp = EntityUnion(editorial)
        by_id: dict[tuple[str, str, str], str] = {}
        for s_, v_, k_, cid in sorted(linked):
            by_id.setdefault((s_, v_, k_), cid)
        where: dict[tuple[str, str], str] = {ref: row[3] for ref, row in old.items()}
        for ref, cluster, fields, _, at in versions:
            node = canon.get(cluster, cluster)
            before = where.get(ref)
            if before is not None and before != node:  # one record seen in two entities
                comp.union(node, before, f"record {ref[0]}:{ref[1]}", at)
            where[ref] = node
            for s_, v_ in _ext(fields):
                key = (s_, v_, fields["kind"])
                comp.union(by_id.setdefault(key, node), node, f"{s_} {v_}", at)
        for s_, v_, k_, cid in sorted(linked):  # entities already sharing an id (defensive)
            comp.union(by_id[(s_, v_, k_)], cid, f"{s_} {v_}", times[-1])
        await self._join_episodes(conn, versions, canon, nodes, comp)
        merged = {n: comp.find(n) for n in sorted(nodes) if comp.find(n) != n}
        events = await self._merge(conn, merged, comp.reasons, max(times))
        await self._write_sources(conn, latest, first, old, comp, canon)
        touched = sorted({comp.find(canon.get(c, c)) for c, _, _ in latest.values()})
        await self._write_content(conn, touched)
        # rows for the side stores: (content id, gone?)
        return Output([(c, False) for c in touched] + [(m, True) for m in sorted(merged)], events)

    async def _join_episodes(
        self,
        conn: AsyncConnection[Any],
        versions: list[_Version],
        canon: dict[str, str],
        nodes: set[str],
        comp: EntityUnion,
    ) -> None:
        """Episodes are named after their series' entity as resolution saw it. When two
        series entities are one (joined now or before), their episodes with the same
        season and episode number are one too: that is evidence like a shared id."""
        series_of: dict[tuple[str, int, int], list[tuple[str, datetime]]] = {}
        targets: set[str] = set()
        for _, cluster, f, _, happened in versions:
            if f["kind"] != "episode" or not f["series_id"] or f["season"] is None:
                continue
            if f["episode"] is None:
                continue
            sid: str = f["series_id"]
            series = comp.find(canon.get(sid, sid))
            nodes.add(series)
            targets.add(series)
            node = canon.get(cluster, cluster)
            series_of.setdefault((series, f["season"], f["episode"]), []).append((node, happened))
        # series that were joined in this batch bring their existing episodes
        targets |= {comp.find(n) for n in nodes if comp.find(n) != n}
        if not targets:
            return
        members = sorted(n for n in nodes if comp.find(n) in targets)
        rows = await fetch_rows(
            conn,
            "SELECT s.content_id, t.season, t.episode, t.content_id FROM platform_titles s"
            " JOIN platform_titles t ON t.series_id = s.cluster_id AND t.kind = 'episode'"
            " WHERE s.content_id = ANY(%s) AND t.season IS NOT NULL AND t.episode IS NOT NULL",
            (members,),
        )
        at = max(v[4] for v in versions)
        for series, season, episode, cid in sorted(rows):
            nodes.add(cid)
            series_of.setdefault((comp.find(series), season, episode), []).append((cid, at))
        for (_, season, episode), eps in sorted(series_of.items()):
            for node, when in eps[1:]:
                comp.union(eps[0][0], node, f"series episode s{season}e{episode}", when)

    async def _merge(
        self,
        conn: AsyncConnection[Any],
        merged: dict[str, str],
        reasons: dict[str, tuple[str, datetime]],
        last: datetime,
    ) -> list[Event]:
        if not merged:
            return []
        losers, survivors = list(merged), [merged[m] for m in merged]
        await conn.execute(
            "UPDATE platform_titles t SET content_id = u.s"
            " FROM unnest(%s::text[], %s::text[]) AS u(l, s) WHERE t.content_id = u.l",
            (losers, survivors),
        )
        await conn.execute(  # keep content_merges flat: earlier losers follow on
            "UPDATE content_merges m SET into_id = u.s"
            " FROM unnest(%s::text[], %s::text[]) AS u(l, s) WHERE m.into_id = u.l",
            (losers, survivors),
        )
        events = []
        rows = []
        for loser, survivor in merged.items():
            reason, at = _reason(loser, survivor, reasons, last)
            rows.append((loser, survivor, reason, at))
            events.append(
                Event(
                    "ContentMerged",
                    loser,
                    {"merged_id": loser, "into_id": survivor, "reason": reason},
                    event_id=derived_id(f"merged:{loser}:{survivor}"),
                    occurred_at=at,
                    producer="catalog",
                )
            )
        await conn.execute(
            "INSERT INTO content_merges (merged_id, into_id, reason, merged_at)"
            " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])"
            " ON CONFLICT (merged_id) DO UPDATE SET into_id = EXCLUDED.into_id,"
            " reason = EXCLUDED.reason, merged_at = EXCLUDED.merged_at",
            [list(col) for col in zip(*rows, strict=True)],
        )
        await conn.execute("DELETE FROM content WHERE content_id = ANY(%s)", (losers,))
        return events

    async def _write_sources(
        self,
        conn: AsyncConnection[Any],
        latest: dict[tuple[str, str], tuple[str, dict[str, Any], datetime]],
        first: dict[tuple[str, str], datetime],
        old: dict[tuple[str, str], tuple[Any, ...]],
        comp: EntityUnion,
        canon: dict[str, str],
    ) -> None:
        rows = []
        for ref, (cluster, f, at) in latest.items():
            prev = old.get(ref)
            row = {
                **f,
                "platform": ref[0],
                "platform_id": ref[1],
                "cluster_id": cluster,
                "content_id": comp.find(canon.get(cluster, cluster)),
                "first_seen": prev[4] if prev is not None else first[ref],
                "updated_at": at,
            }
            rows.append([row[name] for name in _SOURCE_COLS])
        await stage(conn, "platform_titles_batch", "platform_titles", _SOURCE_COLS,
                    _SOURCE_TYPES, rows)  # fmt: skip
        await conn.execute(
            f"INSERT INTO platform_titles ({', '.join(_SOURCE_COLS)})"
            f" SELECT {', '.join(_SOURCE_COLS)} FROM platform_titles_batch"
            " ON CONFLICT (platform, platform_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _SOURCE_COLS[2:])
        )

    async def _write_content(self, conn: AsyncConnection[Any], touched: list[str]) -> None:
        rows = await fetch_rows(
            conn,
            "SELECT content_id, platform, platform_id, kind, title, original_title, year,"
            " runtime_min, genres, overview, language, imdb_id, tmdb_id, series_id, season,"
            " episode, first_seen, updated_at, rating FROM platform_titles"
            " WHERE content_id = ANY(%s)",
            (touched,),
        )
        groups: dict[str, list[SourceRecord]] = {}
        rated: dict[str, list[str | None]] = {}
        for r in rows:
            # the row's columns are SourceRecord's fields in order (the SELECT above)
            fields = (*r[1:8], tuple(r[8]), *r[9:18])
            groups.setdefault(r[0], []).append(SourceRecord(*fields))
            rated.setdefault(r[0], []).append(r[18])
        out = []
        for i, cid in enumerate(sorted(groups)):
            if i % 500 == 499:
                await asyncio.sleep(0)  # let the API in: `mgw up` serves from this loop
            c = merge(groups[cid])
            out.append(
                (
                    cid, c.kind, c.title, c.original_title, c.year, c.runtime_min,
                    list(c.genres), c.overview, c.imdb_id, c.tmdb_id, c.series_id, c.season,
                    c.episode, c.updated_at, list(c.platforms), c.source_count, c.completeness,
                    c.agreement, c.first_seen, strictest_rating(rated[cid]),
                )
            )  # fmt: skip
        await stage(conn, "content_batch", "content", _CONTENT_COLS, _CONTENT_TYPES, out)
        await conn.execute(
            f"INSERT INTO content ({', '.join(_CONTENT_COLS)})"
            f" SELECT {', '.join(_CONTENT_COLS)} FROM content_batch"
            " ON CONFLICT (content_id) DO UPDATE SET "
            + ", ".join(f"{c} = EXCLUDED.{c}" for c in _CONTENT_COLS[1:])
        )
