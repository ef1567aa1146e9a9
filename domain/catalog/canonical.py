"""One canonical title from the records of every source that carries it. No I/O.

Precedence, when sources disagree (documented in docs/catalog.md):
- kind, year, IMDb and TMDB ids: the value most sources give; a tie goes to the
  source earlier in ``SOURCE_PRECEDENCE``;
- title: an editorial record's title; otherwise the most common title, ties by
  precedence;
- runtime: the median of the sources (credits and regional cuts vary by minutes);
- genres: the union, most often given first;
- original title, overview, language, series/season/episode: the first source in
  precedence order that has one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from domain.catalog.resolution import title_variants

#: editorial records (POST /v1/content) first, then platforms by metadata reliability
SOURCE_PRECEDENCE = (
    "editorial",
    "apple_tv_plus",
    "netflix",
    "disney_plus",
    "hbo_max",
    "prime_video",
    "hulu",
    "paramount_plus",
    "peacock",
)
_RANK = {s: i for i, s in enumerate(SOURCE_PRECEDENCE)}


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A platform_titles row: one source's view of the title."""

    platform: str
    platform_id: str
    kind: str
    title: str
    original_title: str | None
    year: int | None
    runtime_min: int | None
    genres: tuple[str, ...]
    overview: str | None
    language: str | None
    imdb_id: str | None
    tmdb_id: str | None
    series_id: str | None
    season: int | None
    episode: int | None
    first_seen: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Canonical:
    kind: str
    title: str
    original_title: str | None
    year: int | None
    runtime_min: int | None
    genres: tuple[str, ...]
    overview: str | None
    imdb_id: str | None
    tmdb_id: str | None
    series_id: str | None
    season: int | None
    episode: int | None
    platforms: tuple[str, ...]
    source_count: int
    completeness: float
    agreement: float
    first_seen: datetime
    updated_at: datetime


def _rank(r: SourceRecord) -> tuple[int, str]:
    return (_RANK.get(r.platform, len(_RANK)), r.platform_id)


def _vote(ordered: Sequence[SourceRecord], get: Callable[[SourceRecord], Any]) -> Any:
    """Most common non-null value; ties to the earliest in precedence order."""
    counts = Counter(v for r in ordered if (v := get(r)) is not None)
    if not counts:
        return None
    top = max(counts.values())
    for r in ordered:
        v = get(r)
        if v is not None and counts[v] == top:
            return v
    return None  # pragma: no cover - unreachable: some value has the top count


def _first(ordered: Sequence[SourceRecord], get: Callable[[SourceRecord], Any]) -> Any:
    return next((v for r in ordered if (v := get(r)) is not None), None)


#: fields a complete title has, with how much each matters to a viewer and to matching
_COMPLETENESS = (
    ("title", 0.15),
    ("year", 0.15),
    ("runtime_min", 0.1),
    ("genres", 0.15),
    ("overview", 0.2),
    ("imdb_id", 0.15),
    ("tmdb_id", 0.05),
    ("original_title", 0.05),
)


def _share(values: Sequence[Any], chosen: Any, same: Callable[[Any, Any], bool]) -> float | None:
    present = [v for v in values if v is not None]
    if len(present) < 2 or chosen is None:
        return None
    return sum(1 for v in present if same(v, chosen)) / len(present)


def merge(records: Sequence[SourceRecord]) -> Canonical:
    if not records:
        raise ValueError("a canonical title needs at least one source record")
    return _single(records[0]) if len(records) == 1 else _merge_many(records)


def _merge_many(records: Sequence[SourceRecord]) -> Canonical:
    ordered = sorted(records, key=_rank)
    editorial = next((r for r in ordered if r.platform == "editorial"), None)
    title = editorial.title if editorial else _vote(ordered, lambda r: r.title)
    year = _vote(ordered, lambda r: r.year)
    runtimes = sorted(r.runtime_min for r in ordered if r.runtime_min is not None)
    genre_counts: Counter[str] = Counter(g for r in ordered for g in r.genres)
    first_pos = {g: i for i, g in reversed(list(enumerate(g for r in ordered for g in r.genres)))}
    genres = tuple(sorted(genre_counts, key=lambda g: (-genre_counts[g], first_pos[g])))
    imdb = _vote(ordered, lambda r: r.imdb_id)
    fields: dict[str, Any] = dict(
        kind=_vote(ordered, lambda r: r.kind),
        title=title,
        original_title=_first(ordered, lambda r: r.original_title),
        year=year,
        runtime_min=runtimes[(len(runtimes) - 1) // 2] if runtimes else None,
        genres=genres,
        overview=_first(ordered, lambda r: r.overview),
        imdb_id=imdb,
        tmdb_id=_vote(ordered, lambda r: r.tmdb_id),
        series_id=_first(ordered, lambda r: r.series_id),
        season=_first(ordered, lambda r: r.season),
        episode=_first(ordered, lambda r: r.episode),
        platforms=tuple(sorted({r.platform for r in ordered if r.platform != "editorial"})),
        source_count=len(ordered),
        first_seen=min(r.first_seen for r in ordered),
        updated_at=max(r.updated_at for r in ordered),
    )
    return Canonical(
        **fields,
        completeness=_completeness(fields),
        agreement=_agreement(fields, ordered),
    )


def _single(r: SourceRecord) -> Canonical:
    """``merge([r])`` without the voting: one source is every field's only value, and
    agreement needs two."""
    genres = r.genres
    if len(set(genres)) != len(genres):  # a repeated genre: the vote orders by count
        genres = tuple(sorted(set(genres), key=lambda g: (-genres.count(g), genres.index(g))))
    fields: dict[str, Any] = dict(
        kind=r.kind,
        title=r.title,
        original_title=r.original_title,
        year=r.year,
        runtime_min=r.runtime_min,
        genres=genres,
        overview=r.overview,
        imdb_id=r.imdb_id,
        tmdb_id=r.tmdb_id,
        series_id=r.series_id,
        season=r.season,
        episode=r.episode,
        platforms=() if r.platform == "editorial" else (r.platform,),
        source_count=1,
        first_seen=r.first_seen,
        updated_at=r.updated_at,
    )
    return Canonical(**fields, completeness=_completeness(fields), agreement=1.0)


def _completeness(fields: dict[str, Any]) -> float:
    return round(sum(w for f, w in _COMPLETENESS if fields[f] not in (None, (), "")), 4)


def _agreement(c: dict[str, Any], ordered: Sequence[SourceRecord]) -> float:
    main = title_variants(c["title"])[:1]
    shares = [
        _share([title_variants(r.title)[:1] for r in ordered], main, lambda a, b: a == b),
        _share([r.year for r in ordered], c["year"], lambda a, b: abs(a - b) <= 0),
        _share([r.runtime_min for r in ordered], c["runtime_min"], lambda a, b: abs(a - b) <= 5),
        _share([r.imdb_id for r in ordered], c["imdb_id"], lambda a, b: a == b),
    ]
    known = [s for s in shares if s is not None]
    return round(sum(known) / len(known) if known else 1.0, 4)


class EntityUnion:
    """Union-find over content ids. The survivor of a component is its least id in
    (editorial first, then id) order: a function of the component alone, so the ids
    that survive do not depend on the order evidence arrives in."""

    def __init__(self, editorial: set[str]) -> None:
        self.parent: dict[str, str] = {}
        self.editorial = editorial
        #: loser -> (the evidence, when it arrived)
        self.reasons: dict[str, tuple[str, datetime]] = {}

    def _rank(self, cid: str) -> tuple[int, str]:
        return (0 if cid in self.editorial else 1, cid)

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: str, b: str, reason: str, at: datetime) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        keep, lose = sorted((ra, rb), key=self._rank)
        self.parent[lose] = keep
        self.reasons[lose] = (reason, at)
