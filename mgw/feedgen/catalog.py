"""The titles the synthetic feeds are made of: the real MovieLens movies (with TMDB runtimes and
original titles where known), about twenty real TV series, and for load tests synthetic copies
with identities of their own."""

from __future__ import annotations

import csv
import gzip
import hashlib
import random
import re
from dataclasses import dataclass, replace
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "data"
MOVIES = DATA / "ml-latest-small-overviews.csv.gz"
RUNTIMES = DATA / "tmdb-5000-runtimes.csv.gz"

_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})(?:[-–]\d{0,4})?\)\s*$")
# "Seven (a.k.a. Se7en)", "Postman, The (Postino, Il)": the parenthesis is another name.
_ALIAS = re.compile(r"^(?P<title>.+?)\s+\((?P<aka>a\.k\.a\.\s+)?(?P<alias>[^()]+)\)$")
_ARTICLE = re.compile(
    r"^(?P<rest>.*), (?P<art>The|A|An|Les|La|Le|Il|El|Die|Der|Das|Los|Las|Un|Une|Lo|Det|Den)$"
)


@dataclass(frozen=True, slots=True)
class Title:
    entity: str  # ground truth: movie:<movieId>, movie:<movieId>#<copy>, series:<n>
    title: str  # as most platforms show it: "The Matrix"
    listed: str  # as MovieLens lists it: "Matrix, The"
    alias: str | None  # the other name MovieLens gives in parentheses
    alias_is_aka: bool  # an English "a.k.a." rather than the original-language title
    year: int | None
    release_date: str | None  # "1999-03-30" where TMDB knows it
    runtime: int  # minutes; the same base value on every platform
    genres: tuple[str, ...]
    overview: str | None
    imdb: str | None
    tmdb: str | None
    original_title: str | None
    original_language: str | None
    popular: bool


@dataclass(frozen=True, slots=True)
class Series:
    number: int
    title: str
    year: int
    seasons: int
    episodes: int  # per season
    episode_runtime: int
    genres: tuple[str, ...]
    imdb: str
    platforms: tuple[str, ...]

    @property
    def entity(self) -> str:
        return f"series:{self.number}"


def _series(*rows: tuple[str, int, int, int, int, str, str, str]) -> tuple[Series, ...]:
    return tuple(
        Series(n, t, y, s, e, rt, tuple(g.split("|")), imdb, tuple(p.split()))
        for n, (t, y, s, e, rt, g, imdb, p) in enumerate(rows, 1)
    )


# Real series, kept small (two seasons of a few episodes) so every feed shows its hierarchy.
SERIES = _series(
    ("Breaking Bad", 2008, 2, 7, 47, "Crime|Drama|Thriller", "tt0903747", "netflix"),
    ("Stranger Things", 2016, 2, 8, 51, "Drama|Fantasy|Horror", "tt4574334", "netflix"),
    ("The Crown", 2016, 2, 6, 58, "Drama", "tt4786824", "netflix"),
    ("The Boys", 2019, 2, 8, 60, "Action|Comedy|Crime", "tt1190634", "prime_video"),
    ("The Marvelous Mrs. Maisel", 2017, 2, 8, 57, "Comedy|Drama", "tt5788792", "prime_video"),
    ("The Mandalorian", 2019, 2, 8, 40, "Action|Adventure|Sci-Fi", "tt8111088", "disney_plus"),
    ("Loki", 2021, 2, 6, 50, "Action|Adventure|Fantasy", "tt9140554", "disney_plus"),
    ("Game of Thrones", 2011, 2, 6, 57, "Action|Adventure|Drama", "tt0944947", "hbo_max"),
    ("Succession", 2018, 2, 6, 62, "Comedy|Drama", "tt7660850", "hbo_max"),
    ("The Sopranos", 1999, 2, 6, 55, "Crime|Drama", "tt0141842", "hbo_max"),
    ("The Handmaid's Tale", 2017, 2, 6, 50, "Drama|Sci-Fi|Thriller", "tt5834204", "hulu"),
    ("Only Murders in the Building", 2021, 2, 6, 33, "Comedy|Crime|Mystery", "tt11691774",
     "hulu disney_plus"),
    ("Ted Lasso", 2020, 2, 6, 35, "Comedy|Drama", "tt10986410", "apple_tv_plus"),
    ("Severance", 2022, 2, 5, 52, "Drama|Mystery|Sci-Fi", "tt11280740", "apple_tv_plus"),
    ("Yellowstone", 2018, 2, 6, 60, "Drama|Western", "tt4236770", "paramount_plus peacock"),
    ("Star Trek: Discovery", 2017, 2, 6, 50, "Action|Adventure|Sci-Fi", "tt5171438",
     "paramount_plus netflix"),
    ("The Office", 2005, 2, 6, 22, "Comedy", "tt0386676", "peacock prime_video"),
    ("Parks and Recreation", 2009, 2, 6, 22, "Comedy", "tt1266020", "peacock hulu"),
    ("Friends", 1994, 2, 6, 22, "Comedy|Romance", "tt0108778", "hbo_max netflix"),
    ("Seinfeld", 1989, 2, 5, 23, "Comedy", "tt0098904", "netflix hulu"),
)  # fmt: skip


def front_article(title: str) -> str:
    """'Matrix, The' -> 'The Matrix'."""
    m = _ARTICLE.match(title)
    return f"{m['art']} {m['rest']}" if m else title


def _runtime(movie_id: str, genres: tuple[str, ...]) -> int:
    # No runtime known: a plausible one from the id, so every platform starts from the same.
    h = int.from_bytes(hashlib.blake2b(movie_id.encode(), digest_size=4).digest(), "big")
    if "Documentary" in genres:
        return 70 + h % 40
    if "Animation" in genres or "Children" in genres:
        return 75 + h % 30
    return 85 + h % 50


def _tmdb_rows(path: Path) -> dict[str, dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as fh:
        return {r["tmdb_id"]: r for r in csv.DictReader(fh)}


def load_titles(movies: Path = MOVIES, runtimes: Path = RUNTIMES) -> list[Title]:
    tmdb_rows = _tmdb_rows(runtimes)
    out: list[Title] = []
    with gzip.open(movies, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            raw = row["title"].strip()
            m = _TITLE_YEAR.match(raw)
            name, year = (m["title"], int(m["year"])) if m else (raw, None)
            alias = None
            aka = False
            a = _ALIAS.match(name)
            if a:
                name, alias, aka = a["title"], front_article(a["alias"].strip()), bool(a["aka"])
            genres = tuple(g for g in row["genres"].split("|") if g and g[0] != "(")
            tmdb = row["tmdbId"].split(".")[0] or None
            t = tmdb_rows.get(tmdb or "")
            runtime = int(t["runtime"]) if t and t["runtime"] else _runtime(row["movieId"], genres)
            display = front_article(name)
            original = t["original_title"] if t else None
            out.append(
                Title(
                    entity=f"movie:{row['movieId']}",
                    title=display,
                    listed=name,
                    alias=alias,
                    alias_is_aka=aka,
                    year=year,
                    release_date=(t["release_date"] or None) if t else None,
                    runtime=runtime,
                    genres=genres,
                    overview=row["overview"] or None,
                    imdb=f"tt{row['imdbId']}" if row["imdbId"] else None,
                    tmdb=tmdb,
                    original_title=original if original and original != display else None,
                    original_language=(t["original_language"] or None) if t else None,
                    popular=t is not None,
                )
            )
    return out


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def synthetic_copies(base: list[Title], scale: int, seed: int) -> list[Title]:
    """(scale - 1) copies of every title, each a distinct synthetic movie: its title made of
    the front of one real title and the back of another, its year shifted, new ids (tt9…), an
    overview spliced from two others. Ground truth movie:<movieId>#<k>."""
    rng = random.Random(f"copies:{seed}")
    words = [t.title.split() for t in base]
    overviews = [_SENTENCE.split(t.overview) for t in base if t.overview]
    used = {t.title.lower() for t in base}
    out: list[Title] = []
    n = 0
    for k in range(1, scale):
        for t in base:
            n += 1
            for attempt in range(6):
                a, b = rng.choice(words), rng.choice(words)
                head = a[: max(1, len(a) // 2)]
                tail = b[len(b) // 2 :] if len(b) > 1 else b
                name = " ".join(head + tail)
                if attempt == 5:
                    name = f"{name} {k + 1}"
                if name.lower() not in used:
                    break
            used.add(name.lower())
            o1, o2 = rng.choice(overviews), rng.choice(overviews)
            overview = " ".join(o1[: max(1, len(o1) // 2)] + o2[len(o2) // 2 :])
            year = None
            if t.year is not None:
                year = min(2025, max(1920, t.year + rng.choice((-1, 1)) * rng.randint(2, 25)))
            out.append(
                replace(
                    t,
                    entity=f"{t.entity}#{k}",
                    title=name,
                    listed=name,
                    alias=None,
                    year=year,
                    release_date=None,
                    runtime=max(60, t.runtime + rng.randint(-12, 12)),
                    overview=overview,
                    imdb=f"tt9{n:07d}",
                    tmdb=str(9_000_000 + n),
                    original_title=None,
                    original_language=None,
                )
            )
    return out
