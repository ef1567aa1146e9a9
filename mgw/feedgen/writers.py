"""One writer per platform: Listings (canonical vocabularies) -> the platform's native feed.
The XML ones are in xml_writers.py. Each writer maps our terms back to the platform's with the
normalizer's own tables, so a feed always round-trips through its normalizer."""

from __future__ import annotations

import csv
import json
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from domain.catalog.platforms import paramount_plus, peacock
from domain.catalog.platforms._common import GENRES
from mgw.feedgen.listings import GenOffer, Listing


def genre_terms(platform: str) -> dict[str, str]:
    """Our genre -> the platform's first term that covers it."""
    out: dict[str, str] = {}
    for term, ours in GENRES[platform].items():
        for g in ours:
            out.setdefault(g, term)
    return out


def iso_duration(minutes: int) -> str:
    h, m = divmod(minutes, 60)
    return "PT" + (f"{h}H" if h else "") + (f"{m}M" if m or not h else "")


def locale(lang: str) -> str:
    return "en-US" if lang == "en" else lang


class Writer:
    """Writes one feed file; `records` counts what its normalizer will return."""

    platform = ""

    def __init__(self, path: Path) -> None:
        self.fh: TextIO = path.open("w", encoding="utf-8", newline="\n")
        self.records = 0
        self._genres = genre_terms(self.platform)
        self._dates: dict[tuple[str, datetime], str] = {}

    def genres(self, ours: tuple[str, ...]) -> list[str]:
        out: list[str] = []
        for g in ours:
            term = self._genres.get(g)
            if term is not None and term not in out:
                out.append(term)
        return out

    def date(self, dt: datetime | None, fmt: str) -> str | None:
        if dt is None:
            return None
        key = (fmt, dt)
        s = self._dates.get(key)
        if s is None:
            s = self._dates[key] = dt.strftime(fmt)
        return s

    def write(self, item: Listing) -> None:
        self.records += 1 + len(item.episodes)
        self._write(item)

    def _write(self, item: Listing) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.fh.close()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


class NetflixWriter(Writer):
    platform = "netflix"
    _PLAN = {"subscription": "standard", "ads": "standard_with_ads"}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fh.write('{"feedVersion":"3.2","provider":"netflix","titles":[\n')
        self._first = True

    def _availability(self, offers: list[GenOffer]) -> list[dict[str, Any]]:
        return [
            {
                "country": o.region,
                "plan": self._PLAN[o.offer_type],
                "maxQuality": o.quality,
                "startDate": self.date(o.start, "%Y-%m-%d"),
                "endDate": self.date(o.end, "%Y-%m-%d"),
            }
            for o in offers
        ]

    def _write(self, t: Listing) -> None:
        doc = _drop_none(
            {
                "netflixId": int(t.platform_id),
                "type": "show" if t.kind == "series" else "movie",
                "title": t.title,
                "originalTitle": t.original_title,
                "releaseYear": t.year,
                "runtimeMinutes": t.runtime if t.kind == "movie" else None,
                "genres": self.genres(t.genres),
                "synopsis": t.overview,
                "language": t.language,
                "imdbId": t.imdb,
                "availability": self._availability(t.offers),
                "links": {"web": t.web_url, "app": t.app_url},
            }
        )
        if t.episodes:
            seasons: dict[int, list[dict[str, Any]]] = {}
            for e in t.episodes:
                seasons.setdefault(e.season or 0, []).append(
                    {
                        "netflixId": int(e.platform_id),
                        "episodeNumber": e.episode,
                        "title": e.title,
                        "runtimeMinutes": e.runtime,
                        "links": {"web": e.web_url, "app": e.app_url},
                    }
                )
            doc["seasons"] = [{"seasonNumber": n, "episodes": eps} for n, eps in seasons.items()]
        self.fh.write(("" if self._first else ",\n") + _dumps(doc))
        self._first = False

    def close(self) -> None:
        self.fh.write("\n]}\n")
        super().close()


class PrimeVideoWriter(Writer):
    platform = "prime_video"
    _TYPE = {"subscription": "SUBSCRIPTION", "free": "FREE_WITH_ADS", "rent": "RENTAL"}

    def _offers(self, offers: list[GenOffer]) -> list[dict[str, Any]]:
        out = []
        for o in offers:
            d: dict[str, Any] = {
                "territory": o.region,
                "offerType": self._TYPE.get(o.offer_type, "PURCHASE"),
                "quality": o.quality,
                "window": _drop_none(
                    {
                        "start": self.date(o.start, "%Y-%m-%dT%H:%M:%SZ"),
                        "end": self.date(o.end, "%Y-%m-%dT%H:%M:%SZ"),
                    }
                ),
            }
            if o.price is not None:
                d["price"] = {"amount": o.price, "currency": o.currency}
            out.append(d)
        return out

    def _line(self, t: Listing, kind: str, offers: list[dict[str, Any]]) -> None:
        doc = _drop_none(
            {
                "gti": t.platform_id,
                "contentType": kind,
                "titleName": t.title,
                "originalTitleName": t.original_title,
                "releaseYear": t.year,
                "durationSeconds": t.runtime * 60 if kind != "SERIES" else None,
                "genres": self.genres(t.genres) if kind != "EPISODE" else None,
                "synopsis": t.overview,
                "language": locale(t.language),
                "externalIds": [{"namespace": "imdb", "value": t.imdb}] if t.imdb else None,
                "parentGti": t.series_id,
                "seasonNumber": t.season,
                "episodeNumber": t.episode,
                "offers": offers,
                "deepLinks": {"web": t.web_url, "app": t.app_url},
            }
        )
        self.fh.write(_dumps(doc) + "\n")

    def _write(self, t: Listing) -> None:
        offers = self._offers(t.offers)
        self._line(t, "SERIES" if t.kind == "series" else "MOVIE", offers)
        for e in t.episodes:
            self._line(e, "EPISODE", offers)


class HuluWriter(Writer):
    platform = "hulu"
    _PACKAGE = {"subscription": "hulu_no_ads", "ads": "hulu_with_ads"}
    _QUALITY = {"SD": "sd", "HD": "hd", "UHD": "4k"}

    def _ms(self, dt: datetime | None) -> int | None:
        return None if dt is None else int(dt.timestamp()) * 1000

    def _line(self, t: Listing, availability: list[dict[str, Any]]) -> None:
        ids = _drop_none({"imdb": t.imdb, "tmdb": t.tmdb})
        doc = _drop_none(
            {
                "id": t.platform_id,
                "entity_type": t.kind,
                "name": t.title,
                "original_name": t.original_title,
                "release_year": t.year,
                "duration": t.runtime * 60 if t.kind != "series" else None,
                "genre_names": self.genres(t.genres) if t.kind != "episode" else None,
                "description": t.overview,
                "language": t.language,
                "external_ids": ids or None,
                "series_id": t.series_id,
                "season_number": t.season,
                "episode_number": t.episode,
                "availability": availability,
                "urls": {"web": t.web_url, "app": t.app_url},
            }
        )
        self.fh.write(_dumps(doc) + "\n")

    def _write(self, t: Listing) -> None:
        availability = [
            {
                "region": o.region.lower(),
                "package": self._PACKAGE[o.offer_type],
                "quality": self._QUALITY[o.quality],
                "start_ms": self._ms(o.start),
                "end_ms": self._ms(o.end),
            }
            for o in t.offers
        ]
        self._line(t, availability)
        for e in t.episodes:
            self._line(e, availability)


def _price_number(price: str) -> int | float:
    d = Decimal(price)
    return int(d) if d == d.to_integral_value() else float(d)


class AppleTvPlusWriter(Writer):
    platform = "apple_tv_plus"
    _QUALITY = {"SD": "SD", "HD": "HD", "UHD": "4K"}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.fh.write('{"meta":{"apiVersion":"2","provider":"apple_tv_plus"},"data":[\n')
        self._first = True

    def _offers(self, offers: list[GenOffer]) -> list[dict[str, Any]]:
        return [
            _drop_none(
                {
                    "kind": o.offer_type,
                    "storefront": o.region.lower(),
                    "videoQuality": self._QUALITY[o.quality],
                    "price": _price_number(o.price) if o.price else None,
                    "currency": o.currency,
                    "availableFrom": self.date(o.start, "%Y-%m-%dT%H:%M:%SZ"),
                    "availableUntil": self.date(o.end, "%Y-%m-%dT%H:%M:%SZ"),
                }
            )
            for o in offers
        ]

    def _write(self, t: Listing) -> None:
        ids = _drop_none({"imdb": t.imdb, "tmdb": int(t.tmdb) if t.tmdb else None})
        attributes = _drop_none(
            {
                "name": t.title,
                "originalName": t.original_title,
                "releaseDate": t.release_date or (str(t.year) if t.year else None),
                "duration": iso_duration(t.runtime) if t.kind == "movie" else None,
                "genres": [{"name": g} for g in self.genres(t.genres)],
                "description": {"standard": t.overview} if t.overview else None,
                "locale": locale(t.language),
                "externalIds": ids or None,
                "url": t.web_url,
                "appUrl": t.app_url,
                "offers": self._offers(t.offers),
            }
        )
        doc: dict[str, Any] = {
            "id": t.platform_id,
            "type": "shows" if t.kind == "series" else "movies",
            "attributes": attributes,
        }
        if t.episodes:
            seasons: dict[int, list[dict[str, Any]]] = {}
            for e in t.episodes:
                seasons.setdefault(e.season or 0, []).append(
                    {
                        "id": e.platform_id,
                        "type": "episodes",
                        "attributes": {
                            "name": e.title,
                            "episodeNumber": e.episode,
                            "duration": iso_duration(e.runtime),
                            "url": e.web_url,
                            "appUrl": e.app_url,
                        },
                    }
                )
            doc["relationships"] = {
                "seasons": {
                    "data": [
                        {
                            "id": f"{t.platform_id}.s{n}",
                            "type": "seasons",
                            "attributes": {"seasonNumber": n},
                            "relationships": {"episodes": {"data": eps}},
                        }
                        for n, eps in seasons.items()
                    ]
                }
            }
        self.fh.write(("" if self._first else ",\n") + _dumps(doc))
        self._first = False

    def close(self) -> None:
        self.fh.write("\n]}\n")
        super().close()


class ParamountPlusWriter(Writer):
    platform = "paramount_plus"
    _QUALITY = {"SD": "SD", "HD": "HD", "UHD": "4K"}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.csv = csv.writer(self.fh, lineterminator="\n")
        self.csv.writerow(paramount_plus.COLUMNS)

    def _row(self, t: Listing, avail: list[str]) -> None:
        self.csv.writerow(
            [
                t.platform_id,
                t.kind,
                t.series_id or "",
                t.season or "",
                t.episode or "",
                t.title,
                t.year or "",
                t.runtime if t.kind != "series" else "",
                "|".join(self.genres(t.genres)) if t.kind != "episode" else "",
                t.overview or "",
                t.language,
                *avail,
                t.web_url,
                t.app_url,
            ]
        )

    def _write(self, t: Listing) -> None:
        o = t.offers[0]
        regions = list(dict.fromkeys(x.region for x in t.offers))
        plans = {"ads": "essential", "subscription": "premium"}
        kinds = dict.fromkeys(plans[x.offer_type] for x in t.offers)
        avail = [
            "|".join(regions),
            "|".join(kinds),
            self._QUALITY[o.quality],
            self.date(o.start, "%m/%d/%Y") or "",
            self.date(o.end, "%m/%d/%Y") or "",
        ]
        self._row(t, avail)
        for e in t.episodes:
            self._row(e, avail)


class PeacockWriter(Writer):
    platform = "peacock"
    _KIND = {"movie": "FEATURE", "series": "SERIES", "episode": "EPISODE"}

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.csv = csv.writer(self.fh, delimiter="\t", lineterminator="\n")
        self.csv.writerow(peacock.COLUMNS)

    def _row(self, t: Listing, avail: list[str]) -> None:
        h, m = divmod(t.runtime, 60)
        self.csv.writerow(
            [
                t.platform_id,
                self._KIND[t.kind],
                t.series_id or "",
                t.season or "",
                t.episode or "",
                t.title,
                t.original_title or "",
                t.year or "",
                f"{h}:{m:02d}:00" if t.kind != "series" else "",
                ", ".join(self.genres(t.genres)) if t.kind != "episode" else "",
                t.overview or "",
                t.language,
                str(int(t.imdb[2:])) if t.imdb else "",
                *avail,
                t.web_url,
                t.app_url,
            ]
        )

    def _write(self, t: Listing) -> None:
        o = t.offers[0]
        types = {x.offer_type for x in t.offers}
        tier = "FREE" if "free" in types else "PREMIUM" if "ads" in types else "PREMIUM_PLUS"
        avail = [
            ",".join(dict.fromkeys(x.region for x in t.offers)),
            tier,
            o.quality,
            self.date(o.start, "%Y-%m-%d %H:%M:%S") or "",
            self.date(o.end, "%Y-%m-%d %H:%M:%S") or "",
        ]
        self._row(t, avail)
        for e in t.episodes:
            self._row(e, avail)
