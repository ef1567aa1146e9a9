"""Who carries which title, where and how: one Listing per platform record, in our canonical
vocabularies. The writers turn Listings into each platform's native format."""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import NamedTuple

from domain.catalog import PLATFORMS
from mgw.feedgen.catalog import SERIES, Series, Title
from mgw.feedgen.noise import NoiseCounter, vary_runtime, vary_title, vary_year

_US_EU = ("US", "GB", "CA", "DE", "FR", "ES", "IT", "NL", "SE", "JP", "BR", "MX", "AU", "IN")
REGIONS: dict[str, tuple[str, ...]] = {
    "netflix": _US_EU,
    "prime_video": _US_EU,
    "disney_plus": _US_EU[:-1],
    "hbo_max": ("US", "MX", "BR", "ES", "FR", "NL", "SE"),
    "hulu": ("US",),
    "apple_tv_plus": _US_EU,
    "paramount_plus": ("US", "CA", "GB", "AU", "DE", "FR", "IT", "MX", "BR"),
    "peacock": ("US",),
}
CURRENCY = {
    "US": "USD", "GB": "GBP", "CA": "CAD", "DE": "EUR", "FR": "EUR", "ES": "EUR", "IT": "EUR",
    "NL": "EUR", "SE": "SEK", "JP": "JPY", "BR": "BRL", "MX": "MXN", "AU": "AUD", "IN": "INR",
}  # fmt: skip
# Local price points, cheapest first: a store prices a title at one tier in every region.
RENT = {
    "USD": ("2.99", "3.99", "4.99", "5.99"), "GBP": ("2.49", "3.49", "4.49", "4.99"),
    "EUR": ("2.99", "3.99", "4.99", "5.99"), "CAD": ("3.99", "4.99", "5.99", "6.99"),
    "SEK": ("29.00", "39.00", "49.00", "59.00"), "JPY": ("300", "400", "500", "550"),
    "BRL": ("9.90", "11.90", "14.90", "19.90"), "MXN": ("39.00", "49.00", "59.00", "69.00"),
    "AUD": ("3.99", "4.99", "5.99", "6.99"), "INR": ("79.00", "99.00", "119.00", "149.00"),
}  # fmt: skip
BUY = {
    "USD": ("7.99", "9.99", "14.99", "19.99"), "GBP": ("5.99", "7.99", "9.99", "13.99"),
    "EUR": ("7.99", "9.99", "13.99", "17.99"), "CAD": ("9.99", "14.99", "19.99", "24.99"),
    "SEK": ("99.00", "129.00", "149.00", "199.00"), "JPY": ("1500", "2000", "2500", "3000"),
    "BRL": ("29.90", "39.90", "49.90", "59.90"), "MXN": ("129.00", "149.00", "199.00", "249.00"),
    "AUD": ("9.99", "14.99", "19.99", "24.99"), "INR": ("299.00", "399.00", "490.00", "690.00"),
}  # fmt: skip
# Relative catalog sizes: how often a platform is drawn for a title.
WEIGHTS = {
    "netflix": 1.2, "prime_video": 1.5, "disney_plus": 0.8, "hbo_max": 0.9, "hulu": 1.0,
    "apple_tv_plus": 1.3, "paramount_plus": 0.8, "peacock": 0.9,
}  # fmt: skip
# Share of records carrying an IMDb / TMDB id; the rest omit it.
IMDB_RATE = {
    "netflix": 0.55, "prime_video": 0.65, "disney_plus": 0.0, "hbo_max": 0.5, "hulu": 0.6,
    "apple_tv_plus": 0.45, "paramount_plus": 0.0, "peacock": 0.4,
}  # fmt: skip
TMDB_RATE = {"hulu": 0.7, "apple_tv_plus": 0.4}
DUPLICATE_RATE = 0.025
_NETFLIX_ADS = frozenset(("US", "GB", "CA", "DE", "FR", "ES", "IT", "JP", "BR", "MX", "AU"))
_FREE = frozenset(("US", "GB", "DE"))
_SLUG = re.compile(r"[^a-z0-9]+")
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE36 = _BASE62[:36].lower()


class GenOffer(NamedTuple):
    region: str
    offer_type: str
    quality: str
    price: str | None
    currency: str | None
    start: datetime | None
    end: datetime | None


@dataclass(slots=True)
class Listing:
    platform_id: str
    kind: str  # movie | series | episode
    entity: str
    title: str
    language: str  # of the title as shown
    original_title: str | None
    year: int | None
    release_date: str | None
    runtime: int
    genres: tuple[str, ...]
    overview: str | None
    imdb: str | None
    tmdb: str | None
    offers: list[GenOffer]
    web_url: str
    app_url: str
    series_id: str | None = None
    season: int | None = None
    episode: int | None = None
    episodes: list[Listing] = field(default_factory=list)


def slug(title: str) -> str:
    return _SLUG.sub("-", title.lower().encode("ascii", "ignore").decode()).strip("-") or "title"


def _b62(n: int, width: int, alphabet: str = _BASE62) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, len(alphabet))
        out.append(alphabet[r])
    return "".join(out)


class Ids:
    """Platform ids in each platform's own style, unique within the feed."""

    def __init__(self, platform: str, rng: random.Random) -> None:
        self.platform, self.rng, self.seen = platform, rng, set[str]()

    def new(self, kind: str) -> str:
        while True:
            pid = self._make(kind)
            if pid not in self.seen:
                self.seen.add(pid)
                return pid

    def _make(self, kind: str) -> str:
        bits = self.rng.getrandbits
        p = self.platform
        if p == "netflix":
            return str(self.rng.randrange(60_000_000, 82_000_000))
        if p in ("prime_video", "hulu"):
            h = f"{bits(128):032x}"
            u = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{h[16:20]}-{h[20:]}"
            return f"amzn1.dv.gti.{u}" if p == "prime_video" else u
        if p == "disney_plus":
            return f"disney:{kind}:{bits(48):012x}"
        if p == "hbo_max":
            return f"urn:hbo:{'feature' if kind == 'movie' else kind}:G{_b62(bits(120), 20)}"
        if p == "apple_tv_plus":
            return f"umc.cmc.{_b62(bits(128), 25, _BASE36)}"
        if p == "paramount_plus":
            return _b62(bits(190), 32)
        return f"GMO_{self.rng.randrange(10**14):014d}_{'01' if kind != 'episode' else '02'}"


def links(platform: str, kind: str, pid: str, title: str) -> tuple[str, str]:
    """(https web link, app URI) as the platform builds them."""
    s = slug(title)
    if platform == "netflix":
        page = "watch" if kind == "episode" else "title"
        return f"https://www.netflix.com/{page}/{pid}", f"nflx://{page}/{pid}"
    if platform == "prime_video":
        return f"https://www.primevideo.com/detail/{pid}", f"aiv://aiv/detail?gti={pid}"
    if platform == "disney_plus":
        key = pid.rsplit(":", 1)[1]
        page = {"movie": f"movies/{s}", "series": f"series/{s}"}.get(kind, "video")
        return f"https://www.disneyplus.com/{page}/{key}", f"disneyplus://{kind}/{key}"
    if platform == "hbo_max":
        key = pid.rsplit(":", 1)[1]
        return f"https://play.max.com/{kind}/{key}", f"hbomax://{kind}/{key}"
    if platform == "hulu":
        page = {"movie": f"movie/{s}-", "series": f"series/{s}-"}.get(kind, "watch/")
        return f"https://www.hulu.com/{page}{pid}", f"hulu://{kind}/{pid}"
    if platform == "apple_tv_plus":
        page = {"movie": "movie", "series": "show"}.get(kind, "episode")
        return f"https://tv.apple.com/us/{page}/{s}/{pid}", f"videos://tv.apple.com/{page}/{pid}"
    if platform == "paramount_plus":
        page = {"movie": "movies/video", "series": f"shows/{s}"}.get(kind, "shows/video")
        return f"https://www.paramountplus.com/{page}/{pid}/", f"pplus://{kind}/{pid}"
    page = "movies" if kind == "movie" else "tv"
    return f"https://www.peacocktv.com/watch/asset/{page}/{s}/{pid}", f"peacock://asset/{pid}"


class Planner:
    """Draws every random choice in a fixed order from seeded generators, so one seed gives
    the same feeds; only the windows move with `today` (real time, so 'new' is new)."""

    def __init__(self, seed: int, today: datetime) -> None:
        self.rng = random.Random(f"plan:{seed}")
        self.ids = {p: Ids(p, random.Random(f"ids:{p}:{seed}")) for p in PLATFORMS}
        self.today = today
        self.noise = NoiseCounter()
        self.windows = NoiseCounter()
        self._weights = [WEIGHTS[p] for p in PLATFORMS]

    def listings(self, titles: list[Title]) -> Iterator[tuple[str, Listing]]:
        for s in SERIES:
            for p in s.platforms:
                yield p, self._series(s, p)
        for t in titles:
            for p in self._platforms_for(t):
                yield p, self._movie(t, p)
                if self.rng.random() < DUPLICATE_RATE:
                    self.noise["duplicate"] += 1
                    yield p, self._movie(t, p)

    def _platforms_for(self, t: Title) -> list[str]:
        r = self.rng
        if t.popular:
            k = r.choices((1, 2, 3, 4, 5, 6), (10, 25, 30, 20, 10, 5))[0]
        else:
            k = r.choices((1, 2, 3), (40, 39, 21))[0]
        kids = "Children" in t.genres or "Animation" in t.genres
        # Weighted sampling without replacement: the k largest of u ** (1 / w).
        keys = [
            (r.random() ** (1.0 / (w * 2.5 if kids and p == "disney_plus" else w)), p)
            for p, w in zip(PLATFORMS, self._weights, strict=True)
        ]
        keys.sort(reverse=True)
        return [p for _, p in keys[:k]]

    def _regions(self, platform: str) -> list[str]:
        pool = REGIONS[platform]
        if len(pool) == 1:
            return list(pool)
        r = self.rng
        k = min(len(pool), r.choices((1, 2, 3, 4, 6), (30, 28, 20, 12, 10))[0])
        if r.random() < 0.85:
            return [pool[0], *r.sample(pool[1:], k - 1)]
        return r.sample(pool[1:], min(k, len(pool) - 1))

    def _window(self) -> tuple[datetime, datetime | None]:
        r, today, days = self.rng, self.today, timedelta(days=1)
        x = r.random()
        if x < 0.62:
            return today - r.randint(30, 1500) * days, None
        if x < 0.72:
            self.windows["new"] += 1
            return today - r.randint(0, 13) * days, None
        if x < 0.80:
            self.windows["coming_soon"] += 1
            return today + r.randint(1, 30) * days, None
        if x < 0.90:
            self.windows["leaving_soon"] += 1
            return today - r.randint(60, 900) * days, today + r.randint(1, 29) * days
        return today - r.randint(30, 900) * days, today + r.randint(60, 400) * days

    def _quality(self) -> str:
        x = self.rng.random()
        return "UHD" if x < 0.35 else "SD" if x < 0.07 + 0.35 else "HD"

    def _offers(self, p: str, kind: str, year: int | None) -> list[GenOffer]:
        r = self.rng
        start, end = self._window()
        q = self._quality()
        regions = self._regions(p)
        tier = r.choices((0, 1, 2, 3), (20, 35, 30, 15))[0]
        out: list[GenOffer] = []
        add = out.append
        for reg in regions:
            cur = CURRENCY[reg]
            if p == "netflix":
                add(GenOffer(reg, "subscription", q, None, None, start, end))
                if reg in _NETFLIX_ADS:
                    add(GenOffer(reg, "ads", "HD", None, None, start, end))
            elif p == "prime_video":
                if kind != "movie" or tier < 2:
                    add(GenOffer(reg, "subscription", q, None, None, start, end))
                if kind == "movie":
                    add(GenOffer(reg, "rent", "HD", RENT[cur][tier], cur, start, end))
                    add(GenOffer(reg, "buy", q, BUY[cur][tier], cur, start, end))
                    if reg in _FREE and tier == 0:
                        add(GenOffer(reg, "free", "SD", None, None, start, end))
            elif p == "disney_plus":
                add(GenOffer(reg, "subscription", q, None, None, start, end))
                if kind == "movie" and (year or 0) >= 2019 and tier == 3:
                    add(GenOffer(reg, "buy", "UHD", BUY[cur][3], cur, start, end))
            elif p == "hbo_max":
                add(GenOffer(reg, "subscription", q, None, None, start, end))
                if reg == "US":
                    add(GenOffer(reg, "ads", "HD", None, None, start, end))
            elif p == "hulu":
                add(GenOffer(reg, "subscription", q, None, None, start, end))
                add(GenOffer(reg, "ads", q, None, None, start, end))
            elif p == "apple_tv_plus":
                if kind == "movie":
                    add(GenOffer(reg, "rent", q, RENT[cur][tier], cur, start, end))
                    add(GenOffer(reg, "buy", q, BUY[cur][tier], cur, start, end))
                else:
                    add(GenOffer(reg, "subscription", q, None, None, start, end))
            elif p == "paramount_plus":
                if tier > 0:
                    add(GenOffer(reg, "ads", q, None, None, start, end))
                add(GenOffer(reg, "subscription", q, None, None, start, end))
            else:  # peacock: the lowest tier the title is in
                types = ("free",) if tier == 0 else ("subscription",) if tier == 3 else None
                for t in types or ("ads", "subscription"):
                    add(GenOffer(reg, t, q, None, None, start, end))
        return out

    def _ids(self, p: str, imdb: str | None, tmdb: str | None) -> tuple[str | None, str | None]:
        r = self.rng
        keep_imdb = imdb if r.random() < IMDB_RATE[p] else None
        keep_tmdb = tmdb if r.random() < TMDB_RATE.get(p, 0.0) else None
        if imdb and not keep_imdb:
            self.noise["imdb_missing"] += 1
        return keep_imdb, keep_tmdb

    def _movie(self, t: Title, p: str) -> Listing:
        r = self.rng
        pid = self.ids[p].new("movie")
        title, lang = vary_title(t, p, r, self.noise)
        year = vary_year(t.year, r, self.noise)
        imdb, tmdb = self._ids(p, t.imdb, t.tmdb)
        web, app = links(p, "movie", pid, title)
        date = t.release_date if year == t.year and t.release_date else None
        return Listing(
            platform_id=pid,
            kind="movie",
            entity=t.entity,
            title=title,
            language=lang,
            original_title=t.original_title,
            year=year,
            release_date=date,
            runtime=vary_runtime(t.runtime, r, self.noise),
            genres=t.genres,
            overview=t.overview,
            imdb=imdb,
            tmdb=tmdb,
            offers=self._offers(p, "movie", t.year),
            web_url=web,
            app_url=app,
        )

    def _series(self, s: Series, p: str) -> Listing:
        r = self.rng
        pid = self.ids[p].new("series")
        listed = f"{s.title[4:]}, The" if s.title.startswith("The ") else s.title
        as_title = Title(
            s.entity, s.title, listed, None, False, s.year, None, s.episode_runtime, s.genres,
            None, s.imdb, None, None, None, True,
        )  # fmt: skip
        title, lang = vary_title(as_title, p, r, self.noise)
        imdb, _ = self._ids(p, s.imdb, None)
        web, app = links(p, "series", pid, title)
        offers = self._offers(p, "series", s.year)
        series = Listing(
            pid, "series", s.entity, title, lang, None, s.year, None, s.episode_runtime,
            s.genres, None, imdb, None, offers, web, app,
        )  # fmt: skip
        for season in range(1, s.seasons + 1):
            for ep in range(1, s.episodes + 1):
                eid = self.ids[p].new("episode")
                name = "Pilot" if season == ep == 1 else f"Episode {ep}"
                eweb, eapp = links(p, "episode", eid, name)
                series.episodes.append(
                    Listing(
                        eid,
                        "episode",
                        f"{s.entity}:s{season}e{ep}",
                        name,
                        lang,
                        None,
                        None,
                        None,
                        max(5, s.episode_runtime + r.randint(-4, 4)),
                        s.genres,
                        None,
                        None,
                        None,
                        offers,
                        eweb,
                        eapp,
                        pid,
                        season,
                        ep,
                    )  # fmt: skip
                )
        return series
