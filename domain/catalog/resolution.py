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
applied later by the canonical projection as a merge; see projections/content_merge.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

#: similarity (0..100) a title pair needs to count as the same title
TITLE_THRESHOLD = 90.0
#: a year off by one is common (festival vs release year) but needs a closer title
OFF_BY_ONE_THRESHOLD = 94.0
#: minutes two runtimes may differ by (credits, regional cuts) and still agree
RUNTIME_SLACK = 12

_ARTICLES = frozenset({"the", "a", "an", "le", "la", "les", "el", "los", "las", "der", "die",
                       "das", "il"})  # fmt: skip
_ROMAN = {"ii": "2", "iii": "3", "iv": "4", "v": "5", "vi": "6", "vii": "7", "viii": "8",
          "ix": "9", "x": "10"}  # fmt: skip
_TRAILING_ARTICLE = re.compile(r",\s*(the|a|an|les|la|le|il|el|der|die|das)\s*$", re.I)
_PARENS = re.compile(r"\(([^()]*)\)")
_NON_WORD = re.compile(r"[^0-9a-z]+")
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


def title_variants(title: str) -> tuple[str, ...]:
    """The normalized forms a title is compared under: the title without parenthesized
    asides ("Seven (a.k.a. Se7en)"), then each aside as an alternative title. An article
    moved to the end ("Matrix, The") is put back, and leading articles are dropped."""
    asides = [
        a for a in (_AKA.sub("", a).strip() for a in _PARENS.findall(title)) if not a.isdigit()
    ]
    main = _PARENS.sub(" ", title).strip() or title
    out: list[str] = []
    for t in (main, *asides):
        t = t.strip()
        m = _TRAILING_ARTICLE.search(t)
        if m:
            t = f"{m.group(1)} {t[: m.start()]}"
        folded = _drop_leading_article(_fold(t))
        if folded and folded not in out:
            out.append(folded)
    return tuple(out)


def block_key(title: str) -> str:
    """The blocking key: the first word of the normalized title."""
    variants = title_variants(title)
    return variants[0].split(" ", 1)[0] if variants else "_"


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


def _pair_score(x: str, y: str, same_year: bool) -> float:
    short, long = (x, y) if len(x) <= len(y) else (y, x)
    prefix = _is_word_prefix(short, long)
    if prefix and same_year and len(long[len(short) :].split()) >= 2:
        # an abbreviated title: its words open the full one and only a subtitle is gone
        # ("star wars" for "star wars episode 4 a new hope"); only when the years agree
        return 95.0
    if _numbers(x) != _numbers(y):
        return 0.0  # "halloween" and "halloween 2" are a film and its sequel
    return max(fuzz.ratio(x, y), fuzz.token_sort_ratio(x, y))


def title_score(a: Sequence[str], b: Sequence[str], *, same_year: bool) -> float:
    """Best similarity between any variant of a and any of b (0..100)."""
    best = 0.0
    for x in a:
        for y in b:
            if x == y:
                return 100.0
            best = max(best, _pair_score(x, y, same_year))
    return best


def match(record: Member, block: Iterable[Member]) -> Match | None:
    """The block member ``record`` is the same title as, or None for a new title.
    Ties go to the lowest cluster id, so the outcome never depends on dict order."""
    best: Match | None = None
    for m in block:
        if m.kind != record.kind:
            continue
        if (record.imdb_id and record.imdb_id == m.imdb_id) or (
            record.tmdb_id and record.tmdb_id == m.tmdb_id
        ):
            cand = Match(m.cluster_id, "external_id", 100.0, m)
            if best is None or best.method != "external_id" or cand.cluster_id < best.cluster_id:
                best = cand
            continue
        if best is not None and best.method == "external_id":
            continue
        if _ids_conflict(record, m):
            continue
        gap = 0 if record.year is None or m.year is None else abs(record.year - m.year)
        if gap > 1:
            continue
        if (
            record.runtime_min is not None
            and m.runtime_min is not None
            and abs(record.runtime_min - m.runtime_min) > RUNTIME_SLACK
        ):
            continue
        score = title_score(record.titles, m.titles, same_year=gap == 0)
        if score < (TITLE_THRESHOLD if gap == 0 else OFF_BY_ONE_THRESHOLD):
            continue
        if (
            best is None
            or score > best.score
            or (score == best.score and m.cluster_id < best.cluster_id)
        ):
            best = Match(m.cluster_id, "title", score, m)
    return best
