"""Entity resolution rules: when two platform records are the same title. No I/O.

A record is compared only with the records of its *block* (the first significant word
of its normalized title), and blocks are the log's partition key, so every candidate
it could match was processed before it in the same partition, in log order. That makes
the outcome a function of the log alone: replay yields the same content ids.

Order of evidence:
1. an external id (IMDb, TMDB) shared with a record of the block;
2. the normalized title (or original title) close enough by rapidfuzz, with the same
   kind, years at most one apart, runtimes at most ``RUNTIME_SLACK`` apart and no
   conflicting external id. A title that is a word-prefix of the other ("Star Wars"
   for "Star Wars: Episode IV - A New Hope") counts only when the years agree exactly.

Evidence that crosses blocks (one IMDb id on two differently titled records) is
applied later by the canonical projection as a merge; see projections/catalog.py.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz import fuzz

#: similarity (0..100) a title pair needs to count as the same title
TITLE_THRESHOLD = 90.0
#: a year off by one is common (festival vs release year) but needs a closer title
OFF_BY_ONE_THRESHOLD = 94.0
#: with a year missing on either side, only a near-identical title will do
UNKNOWN_YEAR_THRESHOLD = 96.0
#: minutes two runtimes may differ by (credits, regional cuts) and still agree
RUNTIME_SLACK = 12

_ARTICLES = frozenset({"the", "a", "an", "le", "la", "les", "el", "los", "las", "der", "die",
                       "das", "il"})  # fmt: skip
_ROMAN = {"ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8",
          "ix": "9", "x": "10"}  # fmt: skip
_TRAILING_ARTICLE = re.compile(r",\s*(the|a|an|les|la|le|il|el|der|die|das)\s*$", re.I)
_PARENS = re.compile(r"\(([^()]*)\)")
_NON_WORD = re.compile(r"[^0-9a-z]+")
#: where a catalog cuts a title short: before a subtitle after ":" or " - "
_SUBTITLE = re.compile(r"\s*:\s+|\s+[-\u2013\u2014]\s+")
#: marks a short form in title_variants: it only ever matches another title exactly
SHORT = "~"
_AKA = re.compile(r"^(a\.?k\.?a\.?|also known as)\s+", re.I)


def _fold(text: str) -> str:
    """Lower case, accents and punctuation gone, roman numerals as digits."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("&", " and ").replace("'", "").replace("\u2019", "")
    words = _NON_WORD.sub(" ", text).split()
    return " ".join(_ROMAN.get(w, w) for w in words)


def _drop_leading_article(words: str) -> str:
    head, _, rest = words.partition(" ")
    return rest if head in _ARTICLES and rest else words


@lru_cache(maxsize=1 << 18)  # pure, and the same titles come back (check, apply, merge)
def title_variants(title: str) -> tuple[str, ...]:
    """The normalized forms a title is compared under: the title without parenthesized
    asides ("Seven (a.k.a. Se7en)"), then each aside as an alternative title, then the
    short forms a catalog abbreviates it to by dropping a subtitle ("Star Wars" for
    "Star Wars: Episode IV - A New Hope"), marked with ``SHORT``. An article moved to
    the end ("Matrix, The") is put back, and leading articles are dropped."""
    asides = [
        a for a in (_AKA.sub("", a).strip() for a in _PARENS.findall(title)) if not a.isdigit()
    ]
    main = _PARENS.sub(" ", title).strip() or title
    out: list[str] = []
    for t in (main, *asides):
        folded = _normalize(t)
        if folded and folded not in out:
            out.append(folded)
    for m in _SUBTITLE.finditer(main):
        short = _normalize(main[: m.start()])
        if short and short not in out and SHORT + short not in out:
            out.append(SHORT + short)
    return tuple(out)


def _normalize(t: str) -> str:
    t = t.strip()
    m = _TRAILING_ARTICLE.search(t)
    if m:
        t = f"{m.group(1)} {t[: m.start()]}"
    return _drop_leading_article(_fold(t))


@lru_cache(maxsize=1 << 16)
def block_key(title: str) -> str:
    """The blocking key: the first word of the normalized title."""
    variants = title_variants(title)
    return variants[0].lstrip(SHORT).split(" ", 1)[0] if variants else "_"


@dataclass(slots=True)
class Member:
    """A platform record as resolution remembers it."""

    platform: str
    platform_id: str
    cluster_id: str
    kind: str
    titles: tuple[str, ...]  # title_variants of title and original title
    year: int | None
    runtime_min: int | None
    imdb_id: str | None
    tmdb_id: str | None


@dataclass(frozen=True, slots=True)
class Match:
    cluster_id: str
    method: str  # external_id | title
    score: float
    member: Member


def _ids_conflict(a: Member, b: Member) -> bool:
    return bool(
        (a.imdb_id and b.imdb_id and a.imdb_id != b.imdb_id)
        or (a.tmdb_id and b.tmdb_id and a.tmdb_id != b.tmdb_id)
    )


def _is_word_prefix(short: str, long: str) -> bool:
    return len(short) < len(long) and long.startswith(short + " ")


def _numbers(words: str) -> list[str]:
    return [w for w in words.split() if w.isdigit()]


def _pair_score(x: str, y: str, same_known_year: bool) -> float:
    if x.startswith(SHORT) or y.startswith(SHORT):
        # a title cut short at its subtitle matches only the other title exactly, and
        # only when the years agree ("mission" for "Mission: Impossible", 1996)
        return 95.0 if same_known_year and x.lstrip(SHORT) == y.lstrip(SHORT) else 0.0
    if _numbers(x) != _numbers(y):
        return 0.0  # "halloween" and "halloween 2" are a film and its sequel
    return max(fuzz.ratio(x, y), fuzz.token_sort_ratio(x, y))


def title_score(a: Sequence[str], b: Sequence[str], *, same_known_year: bool) -> float:
    """Best similarity between any variant of a and any of b (0..100)."""
    best = 0.0
    for x in a:
        for y in b:
            if x == y and not x.startswith(SHORT):
                return 100.0
            best = max(best, _pair_score(x, y, same_known_year))
    return best


def _compatible(record: Member, m: Member) -> bool:
    """Nothing hard tells the two apart: kind, external ids, year, runtime."""
    if m.kind != record.kind or _ids_conflict(record, m):
        return False
    if record.year is not None and m.year is not None and abs(record.year - m.year) > 2:
        return False  # (one year off is noise; two off may be noise on both sides)
    return (
        record.runtime_min is None
        or m.runtime_min is None
        or abs(record.runtime_min - m.runtime_min) <= RUNTIME_SLACK
    )


def _threshold(record: Member, m: Member) -> float:
    if record.year is None or m.year is None:
        return UNKNOWN_YEAR_THRESHOLD
    gap = abs(record.year - m.year)
    return TITLE_THRESHOLD if gap == 0 else OFF_BY_ONE_THRESHOLD if gap == 1 else float("inf")


def _runtime_gap(record: Member, members: Sequence[Member]) -> int:
    gaps = [
        abs(record.runtime_min - m.runtime_min)
        for m in members
        if record.runtime_min is not None and m.runtime_min is not None
    ]
    return min(gaps) if gaps else RUNTIME_SLACK


def match(record: Member, block: Iterable[Member]) -> Match | None:
    """The entity in ``block`` that ``record`` is the same title as, or None for a new
    title. An entity is judged by all its members: one member that is surely another
    title (a conflicting id, a year two apart) rules the entity out, so an entity
    cannot chain "An Eye for an Eye" (1981) to "Eye for an Eye" (1996) through a record
    without a year. Ties go to the lowest entity id, so the outcome never depends on
    the order of the block."""
    clusters: dict[str, list[Member]] = {}
    for m in block:
        clusters.setdefault(m.cluster_id, []).append(m)
    best: Match | None = None
    best_rank: tuple[float, int] = (0.0, 0)
    for cid in sorted(clusters):
        members = clusters[cid]
        if not all(_compatible(record, m) for m in members):
            continue
        shared = next(
            (
                m
                for m in members
                if (record.imdb_id and record.imdb_id == m.imdb_id)
                or (record.tmdb_id and record.tmdb_id == m.tmdb_id)
            ),
            None,
        )
        if shared is not None:
            if best is None or best.method != "external_id":
                best = Match(cid, "external_id", 100.0, shared)
            continue
        if best is not None and best.method == "external_id":
            continue
        for m in members:
            known_same = record.year is not None and record.year == m.year
            score = title_score(record.titles, m.titles, same_known_year=known_same)
            if score < _threshold(record, m):
                continue
            # equal scores: the entity with the closer runtime ("Ghostbusters" without a
            # year is the 1984 film if it runs 105 minutes), then the lowest id
            rank = (score, -_runtime_gap(record, members))
            if best is None or rank > best_rank:
                best, best_rank = Match(cid, "title", score, m), rank
    return best
