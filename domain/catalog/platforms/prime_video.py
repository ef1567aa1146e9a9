"""Prime Video: NDJSON, one record a line; episodes are lines of their own pointing at their
series by parentGti. Runtime in seconds, RFC 3339 windows. See docs/feeds/prime_video.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_ndjson

PLATFORM = "prime_video"
MEDIA_TYPE = "application/x-ndjson"
EXTENSION = "ndjson"

KINDS = {"MOVIE": "movie", "SERIES": "series", "EPISODE": "episode"}
OFFER_TYPES = c.vocabulary(
    {
        "SUBSCRIPTION": "subscription",
        "CHANNEL": "subscription",
        "FREE_WITH_ADS": "free",
        "RENTAL": "rent",
        "PURCHASE": "buy",
    }
)
QUALITIES = c.vocabulary({"SD": "SD", "HD": "HD", "UHD": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_ndjson(stream)


def _offer(o: Any) -> Offer:
    o = c.as_dict(o, "")
    amount = cur = None
    if o.get("price") is not None:
        money = c.as_dict(o["price"], "price")
        amount, cur = c.price(
            money.get("amount"), money.get("currency"), "price.amount", "price.currency"
        )
    window = c.as_dict(o.get("window") or {}, "window")
    return c.offer(
        o.get("territory"),
        c.term(o.get("offerType"), OFFER_TYPES, "offerType", "offer type"),
        c.term(o.get("quality", "HD"), QUALITIES, "quality", "quality"),
        c.timestamp(window.get("start"), "window.start"),
        c.timestamp(window.get("end"), "window.end"),
        ("territory", "window.end", "price.amount"),
        amount,
        cur,
    )


def _offers(items: Any) -> tuple[Offer, ...]:
    return c.offers(c.as_list(items, "offers"), _offer, "offers")


def _external_ids(items: Any) -> tuple[str | None, str | None]:
    imdb = tmdb = None
    for i, x in enumerate(c.as_list(items, "externalIds")):
        x = c.as_dict(x, f"externalIds[{i}]")
        ns = x.get("namespace")
        if ns == "imdb":
            imdb = c.imdb(x.get("value"), f"externalIds[{i}].value")
        elif ns == "tmdb":
            tmdb = c.tmdb(x.get("value"), f"externalIds[{i}].value")
    return imdb, tmdb


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    gti = c.text(raw, "gti")
    if gti is None:
        raise FeedError("gti", "the record has no gti")
    kind = c.kind(raw.get("contentType"), KINDS, "contentType")
    parent = season = episode = None
    if kind == "episode":
        parent = c.text(raw, "parentGti")
        if parent is None:
            raise FeedError("parentGti", "an EPISODE needs the gti of its series")
        season = c.integer(raw.get("seasonNumber"), "seasonNumber")
        episode = c.integer(raw.get("episodeNumber"), "episodeNumber")
    imdb, tmdb = _external_ids(raw.get("externalIds"))
    links = c.as_dict(raw.get("deepLinks") or {}, "deepLinks")
    return [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=gti,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(raw, "titleName"),
            original_title=c.text(raw, "originalTitleName"),
            year=c.year(raw.get("releaseYear"), "releaseYear"),
            runtime_min=c.minutes_from_seconds(raw.get("durationSeconds"), "durationSeconds"),
            genres=c.genres(raw.get("genres"), _GENRES, "genres"),
            overview=c.text(raw, "synopsis"),
            language=c.language(raw.get("language"), "language"),
            imdb_id=imdb,
            tmdb_id=tmdb,
            series_platform_id=parent,
            season=season,
            episode=episode,
            web_url=c.link(links.get("web"), "deepLinks.web", web=True),
            app_url=c.link(links.get("app"), "deepLinks.app", web=False),
            offers=_offers(raw.get("offers")),
        )
    ]
