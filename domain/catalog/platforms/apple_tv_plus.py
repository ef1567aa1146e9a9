"""Apple TV+: one JSON:API-style document, {"data": [...]}, each resource with attributes and,
for shows, relationships.seasons -> episodes. Runtime as an ISO 8601 duration, RFC 3339
windows, prices as JSON numbers. See docs/feeds/apple_tv_plus.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_json_array

PLATFORM = "apple_tv_plus"
MEDIA_TYPE = "application/json"
EXTENSION = "json"

KINDS = {"movies": "movie", "shows": "series"}
OFFER_KINDS = c.vocabulary({"subscription": "subscription", "rent": "rent", "buy": "buy"})
QUALITIES = c.vocabulary({"SD": "SD", "HD": "HD", "4K": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_json_array(stream, "data", "id")


def _offer(o: Any) -> Offer:
    o = c.as_dict(o, "")
    amount, cur = c.price(o.get("price"), o.get("currency"), "price", "currency")
    return c.offer(
        o.get("storefront"),
        c.term(o.get("kind"), OFFER_KINDS, "kind", "offer kind"),
        c.term(o.get("videoQuality", "HD"), QUALITIES, "videoQuality", "quality"),
        c.timestamp(o.get("availableFrom"), "availableFrom"),
        c.timestamp(o.get("availableUntil"), "availableUntil"),
        ("storefront", "availableUntil", "price"),
        amount,
        cur,
    )


def _offers(items: Any, path: str) -> tuple[Offer, ...]:
    return c.offers(c.as_list(items, path), _offer, path)


def _id(res: dict[str, Any], path: str) -> str:
    rid = c.text(res, "id", path)
    if rid is None or not rid.startswith("umc.cmc."):
        raise FeedError(path, f"must be an id like umc.cmc.1a2b3c, got {res.get('id')!r}")
    return rid


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    pid = _id(raw, "id")
    kind = c.kind(raw.get("type"), KINDS, "type")
    a = c.as_dict(raw.get("attributes"), "attributes")
    ids = c.as_dict(a.get("externalIds") or {}, "attributes.externalIds")
    desc = c.as_dict(a.get("description") or {}, "attributes.description")
    offers = _offers(a.get("offers"), "attributes.offers")
    language = c.language(a.get("locale"), "attributes.locale")
    out = [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=pid,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(a, "name", "attributes.name"),
            original_title=c.text(a, "originalName", "attributes.originalName"),
            year=c.year_of_date(a.get("releaseDate"), "attributes.releaseDate"),
            runtime_min=c.minutes_from_iso(a.get("duration"), "attributes.duration"),
            genres=c.genres(a.get("genres"), _GENRES, "attributes.genres"),
            overview=c.text(desc, "standard", "attributes.description.standard"),
            language=language,
            imdb_id=c.imdb(ids.get("imdb"), "attributes.externalIds.imdb"),
            tmdb_id=c.tmdb(ids.get("tmdb"), "attributes.externalIds.tmdb"),
            web_url=c.link(a.get("url"), "attributes.url", web=True),
            app_url=c.link(a.get("appUrl"), "attributes.appUrl", web=False),
            offers=offers,
        )
    ]
    if kind == "series":
        out.extend(_episodes(raw, pid, offers, language))
    return out


def _related(res: dict[str, Any], name: str, path: str) -> list[Any]:
    rel = c.as_dict(res.get("relationships") or {}, f"{path}relationships")
    link = c.as_dict(rel.get(name) or {}, f"{path}relationships.{name}")
    return c.as_list(link.get("data"), f"{path}relationships.{name}.data")


def _episodes(
    raw: dict[str, Any], series_id: str, offers: tuple[Offer, ...], language: str | None
) -> list[PlatformRecord]:
    out = []
    for si, season in enumerate(_related(raw, "seasons", "")):
        sp = f"relationships.seasons.data[{si}]"
        season = c.as_dict(season, sp)
        sa = c.as_dict(season.get("attributes") or {}, f"{sp}.attributes")
        number = c.integer(sa.get("seasonNumber"), f"{sp}.attributes.seasonNumber")
        for ei, ep in enumerate(_related(season, "episodes", f"{sp}.")):
            p = f"{sp}.relationships.episodes.data[{ei}]"
            ep = c.as_dict(ep, p)
            ea = c.as_dict(ep.get("attributes"), f"{p}.attributes")
            desc = c.as_dict(ea.get("description") or {}, f"{p}.attributes.description")
            own = ea.get("offers")
            out.append(
                PlatformRecord(
                    platform=PLATFORM,
                    platform_id=_id(ep, f"{p}.id"),
                    raw_hash=hash_raw({"series": series_id, "season": number, "episode": ep}),
                    kind="episode",
                    title=c.title(ea, "name", f"{p}.attributes.name"),
                    runtime_min=c.minutes_from_iso(ea.get("duration"), f"{p}.attributes.duration"),
                    overview=c.text(desc, "standard", f"{p}.attributes.description.standard"),
                    language=language,
                    series_platform_id=series_id,
                    season=number,
                    episode=c.integer(ea.get("episodeNumber"), f"{p}.attributes.episodeNumber"),
                    web_url=c.link(ea.get("url"), f"{p}.attributes.url", web=True),
                    app_url=c.link(ea.get("appUrl"), f"{p}.attributes.appUrl", web=False),
                    offers=offers if own is None else _offers(own, f"{p}.attributes.offers"),
                )
            )
    return out
