"""Paramount+: comma-separated CSV, one row per title; episodes are rows with series_id.
Runtime in minutes, MM/DD/YYYY dates, '|'-separated lists, no external ids.
See docs/feeds/paramount_plus.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_delimited

PLATFORM = "paramount_plus"
MEDIA_TYPE = "text/csv"
EXTENSION = "csv"

COLUMNS = (
    "content_id",
    "content_type",
    "series_id",
    "season_number",
    "episode_number",
    "title",
    "release_year",
    "runtime_min",
    "genres",
    "description",
    "title_language",
    "territories",
    "plans",
    "quality",
    "available_from",
    "available_to",
    "web_url",
    "app_url",
)
_REQUIRED = ("content_id", "content_type", "title", "territories", "plans")
KINDS = {"movie": "movie", "series": "series", "episode": "episode"}
PLANS = c.vocabulary({"essential": "ads", "premium": "subscription"})
QUALITIES = c.vocabulary({"SD": "SD", "HD": "HD", "4K": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_delimited(stream, COLUMNS, ",", _REQUIRED)


_PATHS = ("territories", "available_to", "plans")


def _offers(row: dict[str, Any]) -> tuple[Offer, ...]:
    # One window and quality for every territory and plan of the row.
    quality = c.term(row.get("quality") or "HD", QUALITIES, "quality", "quality")
    starts = c.us_date(row.get("available_from"), "available_from")
    ends = c.us_date(row.get("available_to"), "available_to")
    plans = [c.term(p, PLANS, "plans", "plan") for p in c.split(row.get("plans"), "|")]
    return tuple(
        c.offer(region, plan, quality, starts, ends, _PATHS)
        for region in c.split(row.get("territories"), "|")
        for plan in plans
    )


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    pid = c.text(raw, "content_id")
    if pid is None:
        raise FeedError("content_id", "the row has no content_id")
    kind = c.kind(raw.get("content_type"), KINDS, "content_type")
    parent = season = episode = None
    if kind == "episode":
        parent = c.text(raw, "series_id")
        if parent is None:
            raise FeedError("series_id", "an episode row needs its series_id")
        season = c.integer(raw.get("season_number"), "season_number")
        episode = c.integer(raw.get("episode_number"), "episode_number")
    return [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=pid,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(raw, "title"),
            year=c.year(raw.get("release_year"), "release_year"),
            runtime_min=c.minutes(raw.get("runtime_min"), "runtime_min"),
            genres=c.genres(c.split(raw.get("genres"), "|"), _GENRES, "genres"),
            overview=c.text(raw, "description"),
            language=c.language(raw.get("title_language"), "title_language"),
            series_platform_id=parent,
            season=season,
            episode=episode,
            web_url=c.link(raw.get("web_url"), "web_url", web=True),
            app_url=c.link(raw.get("app_url"), "app_url", web=False),
            offers=_offers(raw),
        )
    ]
