"""Spelling correction from the catalog's own vocabulary. No I/O.

The vocabulary is the catalog's words with their document frequency (how many titles hold the
word), so a correction always lands on a word that can actually match something, and a common
title word beats a rare one at the same distance. Lookups go through symspellpy's symmetric
delete index: the deletes are built once, a lookup touches only the handful of candidates that
share a delete with the word.

Rules:
- Only words of four characters or more are corrected: shorter words have too many neighbours
  one edit away ("the" -> "she", "tea", "thy"), so a guess would be noise.
- A known word is never changed, and neither is any word holding a digit ("2", "se7en", "1917").
- Words of four or five characters may move one edit, longer words two (transpositions count as
  one edit: "godfahter" -> "godfather"). The closest candidate wins, then the most frequent,
  then the alphabetically first, so the result never depends on insertion order.
- Everything between words is kept, and the casing of each corrected word follows the word
  typed ("The Matrx" -> "The Matrix", "MATRX" -> "MATRIX").
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from itertools import chain

from symspellpy import SymSpell, Verbosity

_WORD = re.compile(r"\w+")
_MIN_LENGTH = 4


class Speller:
    def __init__(self, vocabulary: Mapping[str, int], *, max_edit_distance: int = 2) -> None:
        self._max = max(0, max_edit_distance)
        # symspellpy requires the prefix to be longer than the largest distance
        self._index = SymSpell(self._max, prefix_length=max(7, self._max + 1))
        self._counts: dict[str, int] = {}
        for word, count in vocabulary.items():
            key = word.lower()
            if key and key not in self._counts:
                self._counts[key] = max(1, int(count))  # listed means known, even with count 0
                self._index.create_dictionary_entry(key, self._counts[key])

    @classmethod
    def from_texts(cls, texts: Iterable[str], extra: Iterable[str] = ()) -> Speller:
        """Document frequency of every word of the texts (titles) and of ``extra`` (genre names,
        platform names); words with digits are left out since they are never corrected."""
        counts: Counter[str] = Counter()
        for text in chain(texts, extra):
            counts.update({w for w in _WORD.findall(text.lower()) if not _has_digit(w)})
        return cls(counts)

    def known(self, word: str) -> bool:
        return word.lower() in self._counts

    def correct(self, text: str) -> str | None:
        """``text`` with its misspelt words replaced, or None when nothing changed."""
        out: list[str] = []
        last, changed = 0, False
        for m in _WORD.finditer(text):
            word = m.group()
            fixed = self._fix(word)
            if fixed is not None:
                out += [text[last : m.start()], fixed]
                last, changed = m.end(), True
        return "".join([*out, text[last:]]) if changed else None

    def suggestions(self, word: str, limit: int = 3) -> list[str]:
        """Best candidates first (distance, then frequency); a known word leads its own list."""
        key = word.lower()
        if limit <= 0 or not _WORD.fullmatch(key):
            return []
        found = self._index.lookup(key, Verbosity.ALL, self._distance(key))
        found.sort(key=lambda s: (s.distance, -s.count, s.term))
        return [s.term for s in found[:limit]]

    def _distance(self, key: str) -> int:
        if len(key) < _MIN_LENGTH or _has_digit(key):
            return 0
        return min(self._max, 1 if len(key) <= 5 else 2)

    def _fix(self, word: str) -> str | None:
        key = word.lower()
        distance = self._distance(key)
        if distance == 0 or key in self._counts:
            return None
        found = self._index.lookup(key, Verbosity.CLOSEST, distance)
        if not found:
            return None
        return _cased_like(word, min(found, key=lambda s: (s.distance, -s.count, s.term)).term)


def _has_digit(word: str) -> bool:
    return any(c.isdigit() for c in word)


def _cased_like(typed: str, word: str) -> str:
    if len(typed) > 1 and typed.isupper():
        return word.upper()
    if typed[:1].isupper():
        return word[:1].upper() + word[1:]
    return word
