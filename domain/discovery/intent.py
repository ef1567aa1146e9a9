"""A search query in plain words becomes filters plus the text left over. No I/O.

"funny sci-fi from the 90s on netflix" gives genres (Comedy, Sci-Fi), years 1990..1999, platform
netflix and the text "". How a query is read, so that the result can be predicted:

- Tokens are runs of word characters; an inner apostrophe and a trailing "+" belong to the word
  ("children's", "disney+"). A phrase is consecutive tokens separated only by spaces, hyphens,
  dashes or apostrophes, so "sci-fi", "sci fi" and "scifi" all match. The longest phrase wins.
- Recognised phrases are removed from the text, genre words included. The caller searches the
  remainder and retries without the filters when nothing is found, so a title that happens to
  be a genre word still gets found; guessing which genre words belong to titles would need the
  catalog.
- Quoted text ("..." or “...”) is literal: nothing in it is extracted and its quotes stay in the
  text. An unclosed quote runs to the end of the query.
- Words common in titles are filters only next to another recognised phrase ("and"/"or" are
  skipped when looking): free, rent, buy, kid(s), children('s), family and show. "free horror
  movies" and "kids movies" are filters; "free willy", "spy kids", "modern family" and "the
  truman show" stay text, and so does the lone word "free". "for free", "for kids", "to rent"
  always count.
- A bare year is a title ("1917", "2001 a space odyssey"). A year counts after from / in / of /
  before / after / since / until, or as a range ("1990-1995", "between 1990 and 1995").
  Decades ("90s", "'90s", "1990s", "the nineties", "early 80s") count anywhere. With several
  year phrases the earliest start and the latest end win ("80s and 90s": 1980..1999). Years
  outside 1870..now_year+2 are not years.
- "war" alone is a title word ("Star Wars", "War of the Worlds"): the War genre needs "war
  movie(s)", "war film(s)" or "war drama". "space", "magic" and "new" are never filters.
- Platform names that are ordinary words (prime, amazon, apple, apple tv, disney, paramount,
  peacock, max) count only after "on"/"in" or right after another platform ("on netflix or
  max"); "mad max" is a title. The preposition ("on", "streaming on", ...) goes with the name.
- Connector words left dangling at either end next to a removed phrase are dropped ("that
  animated movie where toys come alive" -> "toys come alive") while "the godfather" keeps its
  "the"; "and"/"or" between two removed phrases go too.
- People are catalog names of two words or more, matched through their first word.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields


def _words(text: str) -> list[str]:
    return text.split()


_TOKEN = re.compile(r"\w+(?:['’]\w+)*\+?")
_JOIN = re.compile(r"[\s\-–—'’‘]*")
_QUOTES = frozenset('"“”')
_ANDOR = frozenset({"and", "or"})
_CONNECTORS = frozenset(
    _words("from on in the with and or that where about for to of a an some which")
)
_OFFER_ORDER = ("subscription", "free", "ads", "rent", "buy")
_DECADE_WORDS = {
    w: 1920 + 10 * i
    for i, w in enumerate(
        _words("twenties thirties forties fifties sixties seventies eighties nineties")
    )
}
_DECADE = re.compile(r"(\d0|\d{3}0)'?s")
_PARTS = {"early": (0, 3), "mid": (3, 6), "late": (6, 9)}
_KIDS = "Children/Kids/Family"

# phrases | genres ("+" joins; "/" lists alternatives, the first in the vocabulary wins) | more:
# a kind, offer types, "kids", and "near" for title-ish words that need a filter next to them
_ROWS = (
    ("funny|comedy|comedies|comedic|hilarious", "Comedy", ""),
    ("rom-com|rom-coms|romcom|romcoms", "Comedy+Romance", ""),
    ("sci-fi|scifi|science fiction", "Sci-Fi/Science Fiction", ""),
    ("animated|animation|cartoon|cartoons|anime", "Animation", ""),
    ("scary|horror|slasher|slashers", "Horror", ""),
    ("romantic|romance|romances|love story|love stories", "Romance", ""),
    ("documentary|documentaries|docs", "Documentary", ""),
    ("docuseries|docu-series", "Documentary", "series"),
    ("sitcom|sitcoms", "Comedy", "series"),
    ("war movie|war movies|war film|war films", "War", "movie"),
    ("war drama|war dramas", "War+Drama", ""),
    ("crime|gangster|gangsters|mafia|heist|heists", "Crime", ""),
    ("thriller|thrillers|suspense|suspenseful", "Thriller", ""),
    ("mystery|mysteries|whodunit|whodunits|whodunnit|detective|detectives", "Mystery", ""),
    ("noir|film noir", "Film-Noir/Film Noir", ""),
    ("musical|musicals", "Musical", ""),
    ("western|westerns|cowboy|cowboys", "Western", ""),
    ("action|action-packed", "Action", ""),
    ("adventure|adventures", "Adventure", ""),
    ("drama|dramas|dramatic", "Drama", ""),
    ("movie|movies|film|films|flick|flicks|tv movie|tv movies", "", "movie"),
    ("series|tv series|tv show|tv shows|shows|tv|miniseries|mini-series", "", "series"),
    ("show", "", "series near"),
    ("for kids|for children|for the kids|for the family|for the whole family", _KIDS, "kids"),
    ("family friendly|kid friendly|kids friendly|child friendly", _KIDS, "kids"),
    ("kids|kid|children|children's|childrens|family", _KIDS, "kids near"),
    ("for free|free of charge", "", "free ads"),
    ("free", "", "free ads near"),
    ("with ads|ad-supported|ad supported", "", "ads"),
    ("to rent|for rent", "", "rent"),
    ("rent", "", "rent near"),
    ("to buy|for sale|to own", "", "buy"),
    ("buy", "", "buy near"),
    ("on subscription|with subscription|with my subscription|included", "", "subscription"),
)
# id | names that are unmistakable | names that are ordinary words too
_PLATFORM_ROWS = (
    ("netflix", "netflix", ""),
    ("prime_video", "prime video|amazon prime|amazon prime video|amazon video", "prime|amazon"),
    ("disney_plus", "disney+|disney plus", "disney"),
    ("hbo_max", "hbo|hbo max|hbomax", "max"),
    ("hulu", "hulu", ""),
    ("apple_tv_plus", "apple tv+|apple tv plus|appletv+", "apple tv|apple"),
    ("paramount_plus", "paramount+|paramount plus", "paramount"),
    ("peacock", "", "peacock"),
)


@dataclass(frozen=True, slots=True)
class Intent:
    """What a query asks for: filters, and the words left over to search as text."""

    text: str
    kind: str | None = None
    genres: tuple[str, ...] = ()
    year_from: int | None = None
    year_to: int | None = None
    platforms: tuple[str, ...] = ()
    offer_types: tuple[str, ...] = ()
    kids: bool = False
    people: tuple[str, ...] = ()
    matched: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"text": self.text}
        for name, value in ((f.name, getattr(self, f.name)) for f in fields(self)[1:]):
            if not (value is None or value is False or value == ()):
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


@dataclass(frozen=True, slots=True)
class _Effect:
    genres: tuple[str, ...] = ()
    kind: str | None = None
    kids: bool = False
    offers: tuple[str, ...] = ()
    platform: str | None = None
    person: str | None = None
    years: tuple[int | None, int | None] | None = None
    near_only: bool = False  # a title-ish word: a filter only next to another filter
    ambiguous: bool = False  # a platform name that is also an ordinary word


_Table = dict[str, list[tuple[tuple[str, ...], _Effect]]]


def _keys(text: str) -> tuple[str, ...]:
    return tuple(m.group().casefold().replace("’", "'") for m in _TOKEN.finditer(text))


def _add(table: _Table, phrases: str | Iterable[str], effect: _Effect) -> None:
    for phrase in [phrases] if isinstance(phrases, str) else phrases:
        for alt in phrase.split("|"):
            keys = _keys(alt)
            if keys:
                rows = table.setdefault(keys[0], [])
                rows[:] = [r for r in rows if r[0] != keys] + [(keys, effect)]
                rows.sort(key=lambda r: -len(r[0]))


class IntentParser:
    """Built once from the catalog's genres, platform ids and people; parse() is pure."""

    def __init__(
        self, genres: Iterable[str], platforms: Iterable[str], people: Iterable[str] = ()
    ) -> None:
        vocab = {g.casefold(): g for g in genres if g and g.strip()}

        def resolve(spec: str) -> tuple[str, ...]:
            picked = (
                next((vocab[a.casefold()] for a in p.split("/") if a.casefold() in vocab), None)
                for p in spec.split("+")
                if p
            )
            return tuple(g for g in picked if g)

        self._phrases: _Table = {}
        for phrases, spec, more in _ROWS:
            found, flags = resolve(spec), set(_words(more))
            if found or not spec or "kids" in flags:
                kind = next((k for k in ("movie", "series") if k in flags), None)
                offers = tuple(o for o in _OFFER_ORDER if o in flags)
                eff = _Effect(found, kind, "kids" in flags, offers, near_only="near" in flags)
                _add(self._phrases, phrases, eff)
        for key, name in vocab.items():  # a genre's own name (and plural) beats a synonym
            if key not in ("war", *_words(_KIDS.casefold().replace("/", " "))):
                _add(self._phrases, _named_forms(key), _Effect(genres=(name,)))
        known = set(platforms)
        self._platforms: _Table = {}
        for pid, plain, ambiguous in _PLATFORM_ROWS:
            if pid in known:
                _add(self._platforms, plain, _Effect(platform=pid))
                _add(self._platforms, ambiguous, _Effect(platform=pid, ambiguous=True))
        self._people: _Table = {}
        for name in people:
            keys = _keys(name)
            if len(keys) >= 2:
                self._people.setdefault(keys[0], []).append((keys, _Effect(person=name)))
        for rows in self._people.values():
            rows.sort(key=lambda r: -len(r[0]))

    def parse(self, query: str, *, now_year: int) -> Intent:
        return _Parse(self, query, now_year).intent()


def _named_forms(name: str) -> Iterator[str]:
    yield name
    if name[-1:].isalpha() and name[-1] != "s":
        plural = name[:-1] + "ies" if name[-1] == "y" and name[-2:-1] not in "aeiou" else name + "s"
        yield plural


class _Parse:
    """One query being read: its tokens, which of them are quoted, what they match."""

    def __init__(self, parser: IntentParser, query: str, now_year: int) -> None:
        self.p, self.q, self.now = parser, query, now_year
        self.toks = [(m.start(), m.end()) for m in _TOKEN.finditer(query)]
        self.keys = tuple(query[s:e].casefold().replace("’", "'") for s, e in self.toks)
        self.protected = [False] * len(self.toks)
        opens, inside = 0, False
        for t, (s, _) in enumerate(self.toks):  # quote state at each token start
            inside ^= sum(c in _QUOTES for c in query[opens:s]) % 2 == 1
            opens, self.protected[t] = s, inside
        # link[t]: token t+1 may continue a phrase that token t is part of
        self.link = [
            not self.protected[t + 1] and bool(_JOIN.fullmatch(query, e, self.toks[t + 1][0]))
            for t, (_, e) in enumerate(self.toks[:-1])
        ]

    def ok(self, i: int, end: int) -> bool:
        return end <= len(self.keys) and not self.protected[i] and all(self.link[i : end - 1])

    def key(self, j: int) -> str:
        return self.keys[j] if 0 <= j < len(self.keys) else ""

    def year(self, j: int) -> int | None:
        k = self.key(j)
        ok = len(k) == 4 and k.isascii() and k.isdigit() and 1870 <= int(k) <= self.now + 2
        return int(k) if ok else None

    def decade(self, j: int) -> tuple[int, int, int] | None:
        """(end, first year, last year) of "90s", "the nineties", "early 80s" at j."""
        part = _PARTS.get(self.key(j))
        j += part is not None
        k, m = self.key(j), _DECADE.fullmatch(self.key(j))
        if k in _DECADE_WORDS:
            start = _DECADE_WORDS[k]
        elif m and k.isascii():
            start = int(m.group(1))
            if start < 100:
                start += 2000 if 2000 + start <= self.now else 1900
        else:
            return None
        if not 1870 <= start <= self.now + 2:
            return None
        lo, hi = part or (0, 9)
        return j + 1, start + lo, start + hi

    def span(self, j: int, between: bool) -> tuple[int, int, int] | None:
        y1, y2 = self.year(j), self.year(j + 2)
        if y1 and y2 and self.key(j + 1) in (("and",) if between else ("to", "through", "until")):
            return j + 3, min(y1, y2), max(y1, y2)
        y2 = self.year(j + 1)
        if (
            y1
            and y2
            and j + 1 < len(self.toks)
            and re.search("[-–—]", self.q[self.toks[j][1] : self.toks[j + 1][0]])
        ):
            return j + 2, min(y1, y2), max(y1, y2)
        return None

    def years(self, i: int) -> tuple[int, _Effect] | None:
        k = self.key(i)
        if k in ("recent", "latest"):
            return i + 1, _Effect(years=(self.now - 2, None))
        if k in ("before", "after", "since", "until", "till"):
            j = i + 1 + (self.key(i + 1) == "the")
            y = self.year(j)
            d = (j + 1, y, y) if y else self.decade(j)
            if d is None:
                return None
            b: tuple[int | None, int | None] = {
                "before": (None, d[1] - 1),
                "after": (d[2] + 1, None),
                "since": (d[1], None),
            }.get(k, (None, d[2]))
            return d[0], _Effect(years=b)
        if k == "between":
            r = self.span(i + 1, True)
        else:
            r = self.span(i, False) or self.decade(i + (k == "the"))
        if r is None and k in ("from", "in", "of", "during"):
            y = self.year(i + 1)
            r = (
                self.span(i + 1, False)
                or ((i + 2, y, y) if y else None)
                or self.decade(i + 1 + (self.key(i + 1) == "the"))
            )
        return (r[0], _Effect(years=(r[1], r[2]))) if r else None

    def platform(self, i: int, last_platform_end: int) -> tuple[int, _Effect] | None:
        k, j = self.key(i), i
        if k in ("streaming", "available", "watch", "watching") and self.key(i + 1) == "on":
            j += 2
        elif k in ("on", "in"):
            j += 1
        chained = 0 <= last_platform_end <= i and all(
            key in _ANDOR for key in self.keys[last_platform_end:i]
        )
        for keys, eff in self.p._platforms.get(self.key(j), ()):
            end = j + len(keys)
            if (
                self.keys[j:end] == keys
                and self.ok(i, end)
                and (not eff.ambiguous or j > i or chained)
            ):
                return end, eff
        return None

    def table(self, i: int, table: _Table | None = None) -> tuple[int, _Effect] | None:
        for keys, eff in (self.p._phrases if table is None else table).get(self.keys[i], ()):
            if self.keys[i : i + len(keys)] == keys and self.ok(i, i + len(keys)):
                return i + len(keys), eff
        return None

    def person(self, i: int) -> tuple[int, _Effect] | None:
        return self.table(i, self.p._people)

    def intent(self) -> Intent:
        n, last_platform = len(self.keys), -1
        matches: list[tuple[int, int, _Effect]] = []
        owner: list[int] = [-1] * n
        i = 0
        while i < n:
            if self.protected[i]:
                i += 1
                continue
            found = (self.years(i), self.platform(i, last_platform), self.table(i), self.person(i))
            best = max((f for f in found if f and self.ok(i, f[0])), default=None, key=_end_of)
            if best is None:
                i += 1
                continue
            if best[1].platform:
                last_platform = best[0]
            owner[i : best[0]] = [len(matches)] * (best[0] - i)
            matches.append((i, best[0], best[1]))
            i = best[0]
        accepted = self.accept(matches, owner)
        removed = [owner[t] >= 0 and accepted[owner[t]] for t in range(n)]
        for t in range(1, n - 1):
            if self.keys[t] in _ANDOR and removed[t - 1] and removed[t + 1]:
                removed[t] = not self.protected[t]
        return self.build([m for m, a in zip(matches, accepted, strict=True) if a], removed)

    def accept(self, matches: list[tuple[int, int, _Effect]], owner: list[int]) -> list[bool]:
        """Near-only words join when a neighbour (past and/or) is an accepted phrase."""
        accepted = [not m[2].near_only for m in matches]
        todo = deque(x for x, a in enumerate(accepted) if a)
        while todo:
            start, end, _ = matches[todo.popleft()]
            for t, step in ((start - 1, -1), (end, 1)):
                while 0 <= t < len(owner) and owner[t] < 0 and self.keys[t] in _ANDOR:
                    t += step
                if 0 <= t < len(owner) and owner[t] >= 0 and not accepted[owner[t]]:
                    accepted[owner[t]] = True
                    todo.append(owner[t])
        return accepted

    def build(self, matches: list[tuple[int, int, _Effect]], removed: list[bool]) -> Intent:
        effs = [m[2] for m in matches]
        kinds = {e.kind for e in effs if e.kind}
        offers = {o for e in effs for o in e.offers}
        lo = [e.years[0] for e in effs if e.years and e.years[0] is not None]
        hi = [e.years[1] for e in effs if e.years and e.years[1] is not None]
        return Intent(  # dict.fromkeys keeps query order without repeats
            text=self.remainder(removed),
            kind=kinds.pop() if len(kinds) == 1 else None,
            genres=tuple(dict.fromkeys(g for e in effs for g in e.genres)),
            platforms=tuple(dict.fromkeys(e.platform for e in effs if e.platform)),
            people=tuple(dict.fromkeys(e.person for e in effs if e.person)),
            year_from=min(lo, default=None),
            year_to=max(hi, default=None),
            offer_types=tuple(o for o in _OFFER_ORDER if o in offers),
            kids=any(e.kids for e in effs),
            matched=tuple(self.phrase(s, e) for s, e, _ in matches),
        )

    def phrase(self, s: int, e: int) -> str:
        start = self.toks[s][0]
        start -= self.keys[s][0].isdigit() and self.q[start - 1 : start] in ("'", "’", "‘")
        return self.q[start : self.toks[e - 1][1]]

    def remainder(self, removed: list[bool]) -> str:
        if not any(removed):
            return " ".join(self.q.split())
        n, q, toks = len(self.toks), self.q, self.toks
        kept = [t for t in range(n) if not removed[t]]

        def dangling(t: int) -> bool:
            near = (t > 0 and removed[t - 1]) or (t + 1 < n and removed[t + 1])
            return near and not self.protected[t] and self.keys[t] in _CONNECTORS

        while kept and dangling(kept[0]):
            removed[kept.pop(0)] = True
        while kept and dangling(kept[-1]):
            removed[kept.pop()] = True
        if not kept:
            return ""
        gap = [
            q[toks[t - 1][1] if t else 0 : toks[t][0] if t < n else len(q)] for t in range(n + 1)
        ]
        out, prev = [], -1
        for t in kept:
            if prev < 0:
                out.append(gap[0] if t == 0 else _tail(gap[t]))
            elif t == prev + 1:
                out.append(gap[t])
            else:
                out.append(_head(gap[prev + 1]) + " " + _tail(gap[t]))
            out.append(q[toks[t][0] : toks[t][1]])
            prev = t
        out.append(gap[n] if prev == n - 1 else _head(gap[prev + 1]))
        return " ".join("".join(out).split()).strip(",;:-–—/&|").strip()


def _end_of(found: tuple[int, _Effect]) -> int:
    return found[0]


def _head(gap: str) -> str:
    """The punctuation stuck to the end of the word before the gap ("airplane!")."""
    return gap.split(None, 1)[0] if gap and not gap[0].isspace() else ""


def _tail(gap: str) -> str:
    return gap.rsplit(None, 1)[-1] if gap and not gap[-1].isspace() else ""
