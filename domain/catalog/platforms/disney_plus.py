"""Disney+: XML in the urn:disney:dss:catalog:2 namespace; scalars in attributes, series
nesting season and episode elements. Runtime in milliseconds, RFC 3339 windows, no external
ids. See docs/feeds/disney_plus.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_xml

PLATFORM = "disney_plus"
MEDIA_TYPE = "application/xml"
EXTENSION = "xml"

NS = "urn:disney:dss:catalog:2"
_ROOT = f"{{{NS}}}catalog"
_RECORDS = frozenset({f"{{{NS}}}movie", f"{{{NS}}}series"})
_LISTS = frozenset({"genre", "rights", "season", "episode"})
KINDS = {"movie": "movie", "series": "series"}
OFFER_TYPES = c.vocabulary({"subscription": "subscription", "premier-access": "buy"})
QUALITIES = c.vocabulary({"SD": "SD", "HD": "HD", "4K": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_xml(stream, _ROOT, _RECORDS, _LISTS, "id")


def _kind(pid: str) -> str:
    # The id says what the record is: disney:movie:<hex>, disney:series:<hex>.
    kind = KINDS.get(pid.split(":")[1]) if pid.count(":") == 2 else None
    if kind is None:
        raise FeedError("id", f"must look like disney:movie:<hex> or disney:series:<hex>: {pid!r}")
    return kind


def _offer(r: Any) -> Offer:
    r = c.as_dict(r, "")
    amount, cur = c.price(r.get("price"), r.get("currency"), "@price", "@currency")
    return c.offer(
        r.get("region"),
        c.term(r.get("offer"), OFFER_TYPES, "@offer", "offer type"),
        c.term(r.get("quality", "HD"), QUALITIES, "@quality", "quality"),
        c.timestamp(r.get("start"), "@start"),
        c.timestamp(r.get("end"), "@end"),
        ("@region", "@end", "@price"),
        amount,
        cur,
    )


def _offers(items: Any) -> tuple[Offer, ...]:
    return c.offers(c.as_list(items, "rights"), _offer, "rights")


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    pid = c.text(raw, "id", "@id")
    if pid is None:
        raise FeedError("@id", "the record has no id")
    kind = _kind(pid)
    links = c.as_dict(raw.get("links") or {}, "links")
    offers = _offers(raw.get("rights"))
    language = c.language(raw.get("language"), "@language")
    out = [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=pid,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(raw, "title"),
            original_title=c.text(raw, "originalTitle"),
            year=c.year(raw.get("releaseYear"), "@releaseYear"),
            runtime_min=c.minutes_from_seconds(
                raw.get("runtimeMillis"), "@runtimeMillis", per_minute=60_000
            ),
            genres=c.genres(raw.get("genre"), _GENRES, "genre"),
            overview=c.text(raw, "description"),
            language=language,
            web_url=c.link(links.get("web"), "links@web", web=True),
            app_url=c.link(links.get("app"), "links@app", web=False),
            offers=offers,
        )
    ]
    if kind != "series":
        return out
    for si, season in enumerate(c.as_list(raw.get("season"), "season")):
        sp = f"season[{si}]"
        season = c.as_dict(season, sp)
        number = c.integer(season.get("number"), f"{sp}@number")
        for ei, ep in enumerate(c.as_list(season.get("episode"), f"{sp}.episode")):
            p = f"{sp}.episode[{ei}]"
            ep = c.as_dict(ep, p)
            eid = c.text(ep, "id", f"{p}@id")
            if eid is None:
                raise FeedError(f"{p}@id", "the episode has no id")
            elinks = c.as_dict(ep.get("links") or {}, f"{p}.links")
            out.append(
                PlatformRecord(
                    platform=PLATFORM,
                    platform_id=eid,
                    raw_hash=hash_raw({"series": pid, "season": number, "episode": ep}),
                    kind="episode",
                    title=c.title(ep, "title", f"{p}.title"),
                    runtime_min=c.minutes_from_seconds(
                        ep.get("runtimeMillis"), f"{p}@runtimeMillis", per_minute=60_000
                    ),
                    overview=c.text(ep, "description", f"{p}.description"),
                    language=language,
                    series_platform_id=pid,
                    season=number,
                    episode=c.integer(ep.get("number"), f"{p}@number"),
                    web_url=c.link(elinks.get("web"), f"{p}.links@web", web=True),
                    app_url=c.link(elinks.get("app"), f"{p}.links@app", web=False),
                    offers=offers,
                )
            )
    return out
