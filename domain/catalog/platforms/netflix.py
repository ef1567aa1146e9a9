"""Netflix: one JSON document, {"titles": [...]}, shows nesting seasons and episodes.
Runtime in minutes, window dates as ISO dates (00:00 UTC). See docs/feeds/netflix.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_json_array

PLATFORM = "netflix"
MEDIA_TYPE = "application/json"
EXTENSION = "json"

KINDS = {"movie": "movie", "show": "series"}
PLANS = c.vocabulary(
    {"standard": "subscription", "premium": "subscription", "standard_with_ads": "ads"}
)
QUALITIES = c.vocabulary({"SD": "SD", "HD": "HD", "UHD": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_json_array(stream, "titles", "netflixId")


def _id(value: Any, path: str) -> str:
    n = c.integer(value, path)
    if n is None or n <= 0:
        raise FeedError(path, f"must be a positive integer id, got {value!r}")
    return str(n)


def _offer(a: Any) -> Offer:
    a = c.as_dict(a, "")
    return c.offer(
        a.get("country"),
        c.term(a.get("plan"), PLANS, "plan", "plan"),
        c.term(a.get("maxQuality"), QUALITIES, "maxQuality", "quality"),
        c.iso_date(a.get("startDate"), "startDate"),
        c.iso_date(a.get("endDate"), "endDate"),
        ("country", "endDate", "plan"),
    )


def _offers(items: Any, path: str) -> tuple[Offer, ...]:
    return c.offers(c.as_list(items, path), _offer, path)


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    pid = _id(raw.get("netflixId"), "netflixId")
    kind = c.kind(raw.get("type"), KINDS, "type")
    links = c.as_dict(raw.get("links") or {}, "links")
    offers = _offers(raw.get("availability"), "availability")
    out = [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=pid,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(raw, "title"),
            original_title=c.text(raw, "originalTitle"),
            year=c.year(raw.get("releaseYear"), "releaseYear"),
            runtime_min=c.minutes(raw.get("runtimeMinutes"), "runtimeMinutes"),
            genres=c.genres(raw.get("genres"), _GENRES, "genres"),
            overview=c.text(raw, "synopsis"),
            language=c.language(raw.get("language"), "language"),
            imdb_id=c.imdb(raw.get("imdbId"), "imdbId"),
            web_url=c.link(links.get("web"), "links.web", web=True),
            app_url=c.link(links.get("app"), "links.app", web=False),
            offers=offers,
        )
    ]
    if kind == "series":
        out.extend(_episodes(raw, pid, offers))
    return out


def _episodes(
    raw: dict[str, Any], series_id: str, offers: tuple[Offer, ...]
) -> list[PlatformRecord]:
    out = []
    for si, season in enumerate(c.as_list(raw.get("seasons"), "seasons")):
        sp = f"seasons[{si}]"
        season = c.as_dict(season, sp)
        number = c.integer(season.get("seasonNumber"), f"{sp}.seasonNumber")
        for ei, ep in enumerate(c.as_list(season.get("episodes"), f"{sp}.episodes")):
            p = f"{sp}.episodes[{ei}]"
            ep = c.as_dict(ep, p)
            links = c.as_dict(ep.get("links") or {}, f"{p}.links")
            # An episode without its own availability is available as its show is.
            own = ep.get("availability")
            out.append(
                PlatformRecord(
                    platform=PLATFORM,
                    platform_id=_id(ep.get("netflixId"), f"{p}.netflixId"),
                    raw_hash=hash_raw({"series": series_id, "season": number, "episode": ep}),
                    kind="episode",
                    title=c.title(ep, "title", f"{p}.title"),
                    runtime_min=c.minutes(ep.get("runtimeMinutes"), f"{p}.runtimeMinutes"),
                    overview=c.text(ep, "synopsis", f"{p}.synopsis"),
                    language=c.language(raw.get("language"), "language"),
                    series_platform_id=series_id,
                    season=number,
                    episode=c.integer(ep.get("episodeNumber"), f"{p}.episodeNumber"),
                    web_url=c.link(links.get("web"), f"{p}.links.web", web=True),
                    app_url=c.link(links.get("app"), f"{p}.links.app", web=False),
                    offers=offers if own is None else _offers(own, f"{p}.availability"),
                )
            )
    return out
