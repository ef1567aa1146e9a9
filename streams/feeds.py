"""Platform feeds onto the log: platform records in, catalog events out.

One path for both producers: ``mgw ingest`` (a whole feed file) and the webhook
route (a few records). Each record becomes a PlatformTitleObserved (keyed by its
resolution blocking key) and an AvailabilityChanged (keyed by the
record, all regions), unless its raw hash and regions are what the log already says:
re-ingesting an unchanged feed appends nothing. A full feed also ends the
availability of every record the platform no longer lists (AvailabilityEnded).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from core.events import Event
from domain.catalog import FeedError, Offer, PlatformRecord
from projections.availability import availability_key, known_regions
from projections.base import Stores
from projections.resolution import known_records, observation_key
from streams.bulk_publish import BulkEncoder, publish_bulk
from streams.publisher import Publisher

APPEND_CHUNK = 2000  # encoding a chunk holds the event loop: keep it short


@dataclass(frozen=True, slots=True)
class Rejected:
    platform: str
    source: str  # file name, or "webhook <delivery id>"
    locator: str  # line, row or record id inside it
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.platform} {self.source} {self.locator}: {self.field}: {self.message}"


@dataclass(slots=True)
class IngestSummary:
    platform: str
    read: int = 0  # records normalized
    appended: int = 0  # events appended
    unchanged: int = 0  # records whose hash and regions the log already has
    duplicates: int = 0  # the same platform id again inside one feed
    ended: int = 0  # (record, region) pairs no longer offered
    rejected: list[Rejected] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "read": self.read,
            "appended": self.appended,
            "unchanged": self.unchanged,
            "duplicates": self.duplicates,
            "ended": self.ended,
            "rejected": len(self.rejected),
        }


def _offer(o: Offer) -> dict[str, Any]:
    return {
        "region": o.region,
        "offer_type": o.offer_type,
        "quality": o.quality,
        "price": o.price,
        "currency": o.currency,
        "available_from": o.available_from,
        "available_until": o.available_until,
    }


def record_events(
    rec: PlatformRecord,
    series_title: str | None,
    producer: str,
    correlation: str | None,
    key: str | None = None,
) -> list[Event]:
    """The events that say what a platform record says now. ``key``: the log key the
    record was first observed under, if it was (default: its blocking key)."""
    observed = {
        "platform": rec.platform,
        "platform_id": rec.platform_id,
        "raw_hash": rec.raw_hash,
        "kind": rec.kind,
        "title": rec.title,
        "original_title": rec.original_title,
        "year": rec.year,
        "runtime_min": rec.runtime_min,
        "genres": list(rec.genres),
        "overview": rec.overview,
        "language": rec.language,
        "imdb_id": rec.imdb_id,
        "tmdb_id": rec.tmdb_id,
        "series_platform_id": rec.series_platform_id,
        "series_title": series_title,
        "season": rec.season,
        "episode": rec.episode,
        "web_url": rec.web_url,
        "app_url": rec.app_url,
    }
    events = [
        Event(
            "PlatformTitleObserved",
            key or observation_key(observed),
            observed,
            correlation_id=correlation,
            producer=producer,
        )
    ]
    events.append(
        Event(
            "AvailabilityChanged",
            availability_key(rec.platform, rec.platform_id),
            {
                "platform": rec.platform,
                "platform_id": rec.platform_id,
                "offers": [_offer(o) for o in rec.offers],
                "web_url": rec.web_url,
                "app_url": rec.app_url,
                "raw_hash": rec.raw_hash,
            },
            correlation_id=correlation,
            producer=producer,
        )
    )
    return events


def ended_event(platform: str, platform_id: str, reason: str, producer: str) -> Event:
    return Event(
        "AvailabilityEnded",
        availability_key(platform, platform_id),
        {"platform": platform, "platform_id": platform_id, "reason": reason},
        producer=producer,
    )


class FeedIngest:
    """Turns one platform's records into events, skipping what the log already says."""

    def __init__(self, stores: Stores, publisher: Publisher, platform: str) -> None:
        self.stores = stores
        self.publisher = publisher
        self.platform = platform
        self.hashes: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.regions: dict[str, set[str]] = {}
        self.encoder = BulkEncoder(publisher.codec)

    async def load_state(self, ids: Sequence[str] | None = None) -> None:
        """What the log says of this platform's records: all of them, or ``ids``."""
        known = await known_records(self.stores.pg, self.platform, ids)
        self.hashes = {pid: h for pid, (h, _) in known.items()}
        self.keys = {pid: k for pid, (_, k) in known.items()}
        self.regions = await known_regions(self.stores.pg, self.platform, ids)

    def parse(self, stream: BinaryIO, source: str, summary: IngestSummary) -> list[PlatformRecord]:
        """Normalized records of one document, in feed order; rejects go to the summary."""
        from domain.catalog.platforms import read_records

        out: list[PlatformRecord] = []
        for locator, item in read_records(self.platform, stream):
            if isinstance(item, FeedError):
                summary.rejected.append(
                    Rejected(self.platform, source, locator, item.field, item.message)
                )
            else:
                out.append(item)
        return out

    def changes(
        self,
        records: Sequence[PlatformRecord],
        summary: IngestSummary,
        *,
        full_feed: bool,
        producer: str,
        correlation: str | None = None,
    ) -> list[Event]:
        """Events for the records that differ from what the log says; with ``full_feed``
        also AvailabilityEnded for every region of every record the feed left out."""
        series_titles = {r.platform_id: r.title for r in records if r.kind == "series"}
        seen: set[str] = set()
        events: list[Event] = []
        # A series before its episodes (flat feeds may list them either way round), so
        # resolution places the series first and names its episodes after it.
        for rec in sorted(records, key=lambda r: r.kind == "episode"):
            summary.read += 1
            if rec.platform_id in seen:
                summary.duplicates += 1  # the first occurrence in the feed wins
                continue
            seen.add(rec.platform_id)
            regions = {o.region for o in rec.offers}
            before = self.regions.get(rec.platform_id, set())
            if self.hashes.get(rec.platform_id) == rec.raw_hash and regions == before:
                summary.unchanged += 1
                continue
            series = rec.series_platform_id
            series_title = series_titles.get(series) if series else None
            # a known record keeps its key; an episode goes where its series went
            key = self.keys.get(rec.platform_id) or (self.keys.get(series) if series else None)
            new = record_events(rec, series_title, producer, correlation, key)
            self.keys[rec.platform_id] = new[0].key
            events += new
            summary.ended += len(before - regions)  # the new offers leave them out
            self.hashes[rec.platform_id] = rec.raw_hash
            self.regions[rec.platform_id] = regions
        if full_feed:
            for pid in sorted(set(self.regions) - seen):
                if self.regions[pid]:
                    events.append(ended_event(self.platform, pid, "dropped from feed", producer))
                    summary.ended += len(self.regions[pid])
                self.regions[pid] = set()
        return events

    def state_ids(self, records: Sequence[PlatformRecord]) -> list[str]:
        """The platform ids whose state a delivery of ``records`` needs: theirs and
        their series'."""
        ids = {r.platform_id for r in records}
        ids |= {r.series_platform_id for r in records if r.series_platform_id}
        return sorted(ids)

    async def append(
        self,
        events: Sequence[Event],
        summary: IngestSummary,
        on_chunk: Callable[[int], None] | None = None,
    ) -> None:
        for i in range(0, len(events), APPEND_CHUNK):
            chunk = events[i : i + APPEND_CHUNK]
            await publish_bulk(self.publisher, chunk, self.encoder)
            summary.appended += len(chunk)
            if on_chunk:
                on_chunk(len(chunk))


@contextlib.asynccontextmanager
async def platform_lock(stores: Stores, platform: str) -> AsyncIterator[None]:
    """One diff-and-append per platform at a time: two ingests (or an ingest and a
    webhook) deciding on the same state would undo each other's work."""
    async with stores.pg.connection() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"ingest:{platform}",))
        yield


def _parse_file(feed: FeedIngest, path: Path, summary: IngestSummary) -> list[PlatformRecord]:
    try:
        with open(path, "rb") as stream:
            return feed.parse(stream, path.name, summary)
    except OSError as exc:
        raise FeedError("file", f"cannot read {path}: {exc.strerror or exc}") from None
    except FeedError as exc:
        raise FeedError("file", f"{path}: {exc.message}") from None


async def ingest_files(
    stores: Stores,
    publisher: Publisher,
    platform: str,
    paths: Iterable[Path],
    *,
    on_parsed: Callable[[int], None] | None = None,
    on_appended: Callable[[int], None] | None = None,
) -> IngestSummary:
    """Ingest whole feed files of one platform (together they are the full feed).
    Raises FeedError("file", ...) for a file that cannot be read at all, before
    anything is appended."""
    summary = IngestSummary(platform)
    feed = FeedIngest(stores, publisher, platform)
    t0 = time.perf_counter()
    records: list[PlatformRecord] = []
    for path in paths:
        got = await asyncio.to_thread(_parse_file, feed, path, summary)
        records += got
        if on_parsed:
            on_parsed(len(got))
    t1 = time.perf_counter()
    async with platform_lock(stores, platform):
        await feed.load_state()
        t2 = time.perf_counter()
        # CPU work off the event loop: `mgw up` serves the API from it during a demo load
        events = await asyncio.to_thread(
            feed.changes, records, summary, full_feed=True, producer=f"feed:{platform}"
        )
        t3 = time.perf_counter()
        await feed.append(events, summary, on_appended)
        t4 = time.perf_counter()
    summary.seconds = {
        "parse": t1 - t0,
        "state": t2 - t1,
        "diff": t3 - t2,
        "append": t4 - t3,
    }
    return summary
