"""Catalog rules without I/O."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import datetime

KINDS = ("movie", "series", "episode")
IMDB_ID = re.compile(r"^tt\d{7,10}$")
TMDB_ID = re.compile(r"^\d{1,10}$")
MIN_YEAR, MAX_YEAR = 1870, 2100


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    message: str


def check_content(c: dict[str, object]) -> Violation | None:
    """Why a ContentUpserted payload cannot be stored, or None."""
    title = c.get("title")
    if not isinstance(title, str) or not title.strip():
        return Violation("title", "must be a non-empty string")
    if c.get("kind") not in KINDS:
        return Violation("kind", f"must be one of {', '.join(KINDS)}")
    year = c.get("year")
    if year is not None and not (isinstance(year, int) and MIN_YEAR <= year <= MAX_YEAR):
        return Violation("year", f"must be between {MIN_YEAR} and {MAX_YEAR}")
    runtime = c.get("runtime_min")
    if runtime is not None and not (isinstance(runtime, int) and 0 < runtime <= 3000):
        return Violation("runtime_min", "must be between 1 and 3000 minutes")
    ext = c.get("external_ids") or {}
    if isinstance(ext, dict):
        imdb, tmdb = ext.get("imdb"), ext.get("tmdb")
        if imdb is not None and not (isinstance(imdb, str) and IMDB_ID.match(imdb)):
            return Violation("external_ids.imdb", "must look like tt0114709")
        if tmdb is not None and not (isinstance(tmdb, str) and TMDB_ID.match(tmdb)):
            return Violation("external_ids.tmdb", "must be a numeric TMDB id")
    if c.get("kind") == "episode":
        if not c.get("series_id"):
            return Violation("series_id", "an episode needs its series_id")
        for f in ("season", "episode"):
            v = c.get(f)
            if v is not None and not (isinstance(v, int) and v >= 0):
                return Violation(f, "must be an integer >= 0")
    return None


def normalize_genres(genres: list[str]) -> list[str]:
    """Trimmed, de-duplicated (case-insensitively), order kept."""
    seen: set[str] = set()
    out: list[str] = []
    for g in genres:
        g = g.strip()
        if g and g.lower() not in seen and g.lower() != "(no genres listed)":
            seen.add(g.lower())
            out.append(g)
    return out


# -- platform records: what every platform normalizer returns ---------------------------

#: The eight platforms whose partner feeds we ingest, by the id used everywhere
#: (CLI argument, webhook path, event field, docs/feeds/<id>.md).
PLATFORMS = (
    "netflix",
    "prime_video",
    "disney_plus",
    "hbo_max",
    "hulu",
    "apple_tv_plus",
    "paramount_plus",
    "peacock",
)
OFFER_TYPES = ("subscription", "free", "ads", "rent", "buy")
QUALITIES = ("SD", "HD", "UHD")


class FeedError(ValueError):
    """A feed record (or a whole feed) that cannot be normalized; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Offer:
    """One way to watch a record in one region: subscription, free, with ads, rent or buy."""

    region: str  # ISO 3166-1 alpha-2, upper case
    offer_type: str  # one of OFFER_TYPES
    quality: str = "HD"  # one of QUALITIES
    price: str | None = None  # decimal text ("3.99"); rent and buy only
    currency: str | None = None  # ISO 4217, upper case; set whenever price is
    available_from: datetime | None = None  # aware, UTC
    available_until: datetime | None = None  # aware, UTC; None = no end announced


@dataclass(frozen=True, slots=True)
class PlatformRecord:
    """One platform's record of one title, in canonical units and vocabularies."""

    platform: str  # one of PLATFORMS
    platform_id: str  # the platform's own id for this record
    raw_hash: str  # hash_raw() of the feed fragment this record came from
    kind: str  # movie | series | episode
    title: str
    original_title: str | None = None
    year: int | None = None
    runtime_min: int | None = None
    genres: tuple[str, ...] = ()
    overview: str | None = None
    language: str | None = None  # ISO 639-1 of the title as given
    imdb_id: str | None = None  # tt0114709
    tmdb_id: str | None = None  # "862"
    series_platform_id: str | None = None  # an episode's series, by this platform's id
    season: int | None = None
    episode: int | None = None
    web_url: str | None = None  # https deep link
    app_url: str | None = None  # the app's URI scheme deep link
    offers: tuple[Offer, ...] = ()


def hash_raw(fragment: object) -> str:
    """Stable hash of a feed fragment (dicts, lists, scalars): key order does not count."""
    blob = json.dumps(fragment, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.blake2b(blob.encode(), digest_size=16).hexdigest()
