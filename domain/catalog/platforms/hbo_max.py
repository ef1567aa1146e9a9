"""HBO Max: XML in the urn:wbd:max:catalog:1 namespace with MovieLabs metadata elements (md:);
episodes nested straight under their series with season and number attributes. Runtime as an
ISO 8601 duration, windows as RFC 3339 timestamps with offsets. See docs/feeds/hbo_max.md."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO

from domain.catalog import FeedError, Offer, PlatformRecord, hash_raw
from domain.catalog.platforms import _common as c
from domain.catalog.platforms._readers import read_xml

PLATFORM = "hbo_max"
MEDIA_TYPE = "application/xml"
EXTENSION = "xml"

NS = "urn:wbd:max:catalog:1"
MD = "http://www.movielabs.com/schema/md/v2.9/md"
_ROOT = f"{{{NS}}}Catalog"
_RECORDS = frozenset({f"{{{NS}}}Feature", f"{{{NS}}}Series"})
_LISTS = frozenset({"Genre", "AltIdentifier", "Availability", "DeepLink", "Episode"})
KINDS = {"feature": "movie", "series": "series"}
LICENSES = c.vocabulary({"SVOD": "subscription", "AVOD": "ads", "FVOD": "free"})
QUALITIES = c.vocabulary({"SD": "SD", "HD": "HD", "4K UHD": "UHD", "UHD": "UHD"})
_GENRES = c.genre_table(PLATFORM)


def read(stream: BinaryIO) -> Iterator[tuple[str, dict[str, Any] | FeedError]]:
    return read_xml(stream, _ROOT, _RECORDS, _LISTS, "contentId")


def _offer(a: Any) -> Offer:
    a = c.as_dict(a, "")
    return c.offer(
        a.get("territory"),
        c.term(a.get("license"), LICENSES, "@license", "license"),
        c.term(a.get("format", "HD"), QUALITIES, "@format", "format"),
        c.timestamp(a.get("start"), "@start"),
        c.timestamp(a.get("end"), "@end"),
        ("@territory", "@end", "@license"),
    )


def _offers(items: Any) -> tuple[Offer, ...]:
    return c.offers(c.as_list(items, "Availability"), _offer, "Availability")


def _links(items: Any, path: str) -> tuple[str | None, str | None]:
    web = app = None
    for i, d in enumerate(c.as_list(items, path)):
        p = f"{path}[{i}]"
        d = c.as_dict(d, p)
        if d.get("platform") == "web":
            web = c.link(d.get("#text"), p, web=True)
        elif d.get("platform") == "app":
            app = c.link(d.get("#text"), p, web=False)
    return web, app


def _info(raw: dict[str, Any], path: str) -> dict[str, Any]:
    info = raw.get("LocalizedInfo")
    if info is None:
        raise FeedError(f"{path}LocalizedInfo", "title is missing or empty")
    return c.as_dict(info, f"{path}LocalizedInfo")


def normalize(raw: dict[str, Any]) -> list[PlatformRecord]:
    pid = c.text(raw, "contentId", "@contentId")
    kind = KINDS.get(pid.split(":")[2]) if pid and pid.count(":") == 3 else None
    if pid is None or kind is None:
        raise FeedError("@contentId", f"must look like urn:hbo:feature:<id>, got {pid!r}")
    info = _info(raw, "")
    imdb = None
    for i, alt in enumerate(c.as_list(raw.get("AltIdentifier"), "AltIdentifier")):
        alt = c.as_dict(alt, f"AltIdentifier[{i}]")
        if alt.get("namespace") == "IMDB":
            imdb = c.imdb(alt.get("#text"), f"AltIdentifier[{i}]")
    web, app = _links(raw.get("DeepLink"), "DeepLink")
    offers = _offers(raw.get("Availability"))
    out = [
        PlatformRecord(
            platform=PLATFORM,
            platform_id=pid,
            raw_hash=hash_raw(raw),
            kind=kind,
            title=c.title(info, "TitleDisplay", "LocalizedInfo.TitleDisplay"),
            original_title=c.string(raw.get("OriginalTitle"), "OriginalTitle"),
            year=c.year(raw.get("ReleaseYear"), "ReleaseYear"),
            runtime_min=c.minutes_from_iso(raw.get("RunLength"), "RunLength"),
            genres=c.genres(info.get("Genre"), _GENRES, "LocalizedInfo.Genre"),
            overview=c.text(info, "Summary", "LocalizedInfo.Summary"),
            language=c.language(info.get("language"), "LocalizedInfo@language"),
            imdb_id=imdb,
            web_url=web,
            app_url=app,
            offers=offers,
        )
    ]
    for i, ep in enumerate(c.as_list(raw.get("Episode"), "Episode")):
        p = f"Episode[{i}]"
        ep = c.as_dict(ep, p)
        eid = c.text(ep, "contentId", f"{p}@contentId")
        if eid is None:
            raise FeedError(f"{p}@contentId", "the episode has no contentId")
        season = c.integer(ep.get("season"), f"{p}@season")
        einfo = _info(ep, f"{p}.")
        eweb, eapp = _links(ep.get("DeepLink"), f"{p}.DeepLink")
        out.append(
            PlatformRecord(
                platform=PLATFORM,
                platform_id=eid,
                raw_hash=hash_raw({"series": pid, "season": season, "episode": ep}),
                kind="episode",
                title=c.title(einfo, "TitleDisplay", f"{p}.LocalizedInfo.TitleDisplay"),
                runtime_min=c.minutes_from_iso(ep.get("RunLength"), f"{p}.RunLength"),
                overview=c.text(einfo, "Summary", f"{p}.LocalizedInfo.Summary"),
                language=c.language(einfo.get("language"), f"{p}.LocalizedInfo@language"),
                series_platform_id=pid,
                season=season,
                episode=c.integer(ep.get("number"), f"{p}@number"),
                web_url=eweb,
                app_url=eapp,
                offers=offers,
            )
        )
    return out
