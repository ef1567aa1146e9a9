"""Peacock: tab-separated values with upper-case column names, one row per asset; episodes
point at their series by PARENT_ASSET_ID. Runtime as H:MM:SS, dates as 'YYYY-MM-DD HH:MM:SS'
in UTC, IMDb ids as bare numbers. See docs/feeds/peacock.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_delimited

PLATFORM = "peacock"
MEDIA_TYPE = "text/tab-separated-values"
EXTENSION = "tsv"

COLUMNS = (
    "ASSET_ID",
    "ASSET_TYPE",
    "PARENT_ASSET_ID",
    "SEASON_NUM",
    "EPISODE_NUM",
    "TITLE",
    "ORIGINAL_TITLE",
    "YEAR",
    "DURATION",
    "GENRE",
    "SYNOPSIS",
    "LANG",
    "IMDB_ID",
    "TERRITORY",
    "TIER",
    "RESOLUTION",
    "START_DT",
    "END_DT",
    "WEB_LINK",
    "APP_LINK",
)
_REQUIRED = ("ASSET_ID", "ASSET_TYPE", "TITLE", "TERRITORY", "TIER")
KINDS = {"FEATURE": "movie", "SERIES": "series", "EPISODE": "episode"}
# The lowest tier a title is in: Premium titles are also in Premium Plus (without ads).
TIERS: dict[str, tuple[str, ...]] = {
    "free": ("free",),
    "premium": ("ads", "subscription"),
    "premium_plus": ("subscription",),
}
QUALITIES = c.vocabulary({"SD": "SD", "HD": "HD", "UHD": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_delimited(stream, COLUMNS, "\t", _REQUIRED)


_PATHS = ("TERRITORY", "END_DT", "TIER")


def _offers(row: dict[str, Any]) -> tuple[Offer, ...]:
    tier = TIERS.get(str(row.get("TIER", "")).strip().lower())
    if tier is None:
        raise FeedError(
            "TIER",
            f"unknown tier {row.get('TIER')!r}; expected one of: "
            + ", ".join(t.upper() for t in TIERS),
        )
    quality = c.term(row.get("RESOLUTION") or "HD", QUALITIES, "RESOLUTION", "resolution")
    starts = c.timestamp(row.get("START_DT"), "START_DT", naive_is_utc=True)
    ends = c.timestamp(row.get("END_DT"), "END_DT", naive_is_utc=True)
    return tuple(
        c.offer(region, t, quality, starts, ends, _PATHS)
        for region in c.split(row.get("TERRITORY"), ",")
        for t in tier
    )


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    pid = c.text(raw, "ASSET_ID")
    if pid is None:
        raise FeedError("ASSET_ID", "the row has no ASSET_ID")
    kind = c.kind(raw.get("ASSET_TYPE"), KINDS, "ASSET_TYPE")
    parent = season = episode = None
    if kind == "episode":
        parent = c.text(raw, "PARENT_ASSET_ID")
        if parent is None:
            raise FeedError("PARENT_ASSET_ID", "an EPISODE row needs its series' ASSET_ID")
        season = c.integer(raw.get("SEASON_NUM"), "SEASON_NUM")
        episode = c.integer(raw.get("EPISODE_NUM"), "EPISODE_NUM")
    return [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=pid,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(raw, "TITLE"),
            original_title=c.text(raw, "ORIGINAL_TITLE"),
            year=c.year(raw.get("YEAR"), "YEAR"),
            runtime_min=c.minutes_from_hms(raw.get("DURATION"), "DURATION"),
            genres=c.genres(c.split(raw.get("GENRE"), ","), _GENRES, "GENRE"),
            overview=c.text(raw, "SYNOPSIS"),
            language=c.language(raw.get("LANG"), "LANG"),
            imdb_id=c.imdb(raw.get("IMDB_ID"), "IMDB_ID"),
            series_platform_id=parent,
            season=season,
            episode=episode,
            web_url=c.link(raw.get("WEB_LINK"), "WEB_LINK", web=True),
            app_url=c.link(raw.get("APP_LINK"), "APP_LINK", web=False),
            offers=_offers(raw),
        )
    ]
