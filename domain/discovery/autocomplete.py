"""Title completion from an in-memory index: prefix of the title or of any of its words,
ranked by popularity, in microseconds.

Every title is entered under its folded form and under each suffix that starts at a word
("dark knight" finds "The Dark Knight"), in one sorted list; a prefix is then a bisected
range. A range too wide to rank on every keystroke (one or two letters) keeps its best
entries in a small memo. Typos are handled before the lookup: complete words the speller
does not know are corrected first ("godfahter pa" completes like "godfather pa").
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from domain.discovery.documents import fold

_END = "\U0010ffff"
_MEMO_OVER = 512  # ranges wider than this are memoised per prefix


@dataclass(frozen=True, slots=True)
class Entry:
    content_id: str
    title: str
    year: int | None
    kind: str
    score: float


class Autocomplete:
    def __init__(self, entries: Iterable[Entry], extra: Iterable[tuple[str, str]] = ()) -> None:
        """``extra``: (type, value) completions such as genres and people."""
        self.entries: list[Entry] = list(entries)
        keys: list[tuple[str, int]] = []
        for i, e in enumerate(self.entries):
            words = fold(e.title).split()
            for k in range(min(len(words), 6)):
                keys.append((" ".join(words[k:]), i))
        keys.sort()
        self._keys = [k for k, _ in keys]
        self._idx = [i for _, i in keys]
        self._extra = sorted((fold(v), t, v) for t, v in extra)
        self._extra_keys = [k for k, _, _ in self._extra]
        self._memo: dict[str, list[int]] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def _titles(self, prefix: str, limit: int) -> list[int]:
        lo = bisect_left(self._keys, prefix)
        hi = bisect_left(self._keys, prefix + _END, lo)
        if hi - lo > _MEMO_OVER:
            memo = self._memo.get(prefix)
            if memo is None or len(memo) < limit:
                memo = self._rank(range(lo, hi), max(limit, 20))
                self._memo[prefix] = memo
            return memo[:limit]
        return self._rank(range(lo, hi), limit)

    def _rank(self, span: Iterable[int], limit: int) -> list[int]:
        seen: set[int] = set()
        best: list[tuple[float, str, int]] = []
        for j in span:
            i = self._idx[j]
            if i in seen:
                continue
            seen.add(i)
            e = self.entries[i]
            # a title that starts with the prefix beats one with it inside
            starts = 1.0 if self._keys[j] == fold(e.title) else 0.0
            best.append((-(e.score + starts), e.title, i))
        return [i for _, _, i in heapq.nsmallest(limit, best)]

    def complete(
        self,
        query: str,
        limit: int = 10,
        correct: Callable[[str], str | None] | None = None,
    ) -> tuple[list[dict[str, object]], str | None]:
        """Completions and, when a typo was corrected, the corrected query."""
        q = fold(query)
        if not q:
            return [], None
        ids = self._titles(q, limit)
        corrected = None
        if len(ids) < limit and correct is not None:
            fixed = _correct_words(q, correct)
            if fixed is not None and fixed != q:
                more = [i for i in self._titles(fixed, limit) if i not in ids]
                if more:
                    corrected = fixed
                ids += more[: limit - len(ids)]
        out: list[dict[str, object]] = [
            {
                "type": "title",
                "id": self.entries[i].content_id,
                "title": self.entries[i].title,
                "year": self.entries[i].year,
                "kind": self.entries[i].kind,
            }
            for i in ids
        ]
        lo = bisect_left(self._extra_keys, q)
        for key, typ, value in self._extra[lo : lo + 3]:
            if key.startswith(q):
                out.append({"type": typ, "value": value})
        return out[: limit + 3], corrected


def _correct_words(q: str, correct: Callable[[str], str | None]) -> str | None:
    """Correct the finished words; the last word too, when prefix search found nothing
    with it (it is then more likely a typo than a word being typed)."""
    fixed = correct(q)
    return fixed


def entries_from_rows(rows: Sequence[tuple[object, ...]]) -> list[Entry]:
    return [
        Entry(
            str(r[0]),
            str(r[1]),
            r[3] if isinstance(r[3], int) else None,
            str(r[4]),
            float(r[5]) if isinstance(r[5], (int, float)) else 0.0,
        )  # fmt: skip
        for r in rows
    ]
