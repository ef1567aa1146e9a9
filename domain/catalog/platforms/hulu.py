"""Hulu: NDJSON in snake_case; episodes are lines of their own with series_id. Runtime in
seconds, windows in epoch milliseconds, lower-case regions. See docs/feeds/hulu.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_ndjson

PLATFORM = "hulu"
MEDIA_TYPE = "application/x-ndjson"
EXTENSION = "ndjson"

KINDS = {"movie": "movie", "series": "series", "episode": "episode"}
PACKAGES = c.vocabulary(
    {"hulu_no_ads": "subscription", "hulu_with_ads": "ads", "live_tv": "subscription"}
)
QUALITIES = c.vocabulary({"sd": "SD", "hd": "HD", "4k": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_ndjson(stream)


def _offer(a: Any) -> Offer:
    a = c.as_dict(a, "")
    return c.offer(
        a.get("region"),
        c.term(a.get("package"), PACKAGES, "package", "package"),
        c.term(a.get("quality", "hd"), QUALITIES, "quality", "quality"),
        c.epoch_ms(a.get("start_ms"), "start_ms"),
        c.epoch_ms(a.get("end_ms"), "end_ms"),
        ("region", "end_ms", "package"),
    )


def _offers(items: Any) -> tuple[Offer, ...]:
    return c.offers(c.as_list(items, "availability"), _offer, "availability")


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    pid = c.text(raw, "id")
    if pid is None:
        raise FeedError("id", "the record has no id")
    kind = c.kind(raw.get("entity_type"), KINDS, "entity_type")
    parent = season = episode = None
    if kind == "episode":
        parent = c.text(raw, "series_id")
        if parent is None:
            raise FeedError("series_id", "an episode needs the id of its series")
        season = c.integer(raw.get("season_number"), "season_number")
        episode = c.integer(raw.get("episode_number"), "episode_number")
    ids = c.as_dict(raw.get("external_ids") or {}, "external_ids")
    urls = c.as_dict(raw.get("urls") or {}, "urls")
    return [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=pid,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(raw, "name"),
            original_title=c.text(raw, "original_name"),
            year=c.year(raw.get("release_year"), "release_year"),
            runtime_min=c.minutes_from_seconds(raw.get("duration"), "duration"),
            genres=c.genres(raw.get("genre_names"), _GENRES, "genre_names"),
            overview=c.text(raw, "description"),
            language=c.language(raw.get("language"), "language"),
            imdb_id=c.imdb(ids.get("imdb"), "external_ids.imdb"),
            tmdb_id=c.tmdb(ids.get("tmdb"), "external_ids.tmdb"),
            series_platform_id=parent,
            season=season,
            episode=episode,
            web_url=c.link(urls.get("web"), "urls.web", web=True),
            app_url=c.link(urls.get("app"), "urls.app", web=False),
            offers=_offers(raw.get("availability")),
        )
    ]
