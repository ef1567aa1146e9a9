"""What kind of query a search has, and the ranking weights that kind is searched with.

Three kinds, told apart by length alone (a decision that costs nothing and that a user
can predict):

- ``title``: up to four words ("heat", "dark knigt", "star wars empire"). Trigram matching
  runs, for typos and partial titles.
- ``keywords``: five to eight words ("funny heist movie with a twist ending").
- ``description``: more than eight words, the way people describe a film whose title is
  on the tip of the tongue ("the one where a robot is alone on a dead earth and falls for
  a probe"). Such a text shares many common words with many overviews, so full text ranked
  on any of its words outvotes the semantic retriever under equal-weight fusion. A
  description is searched with its own weights (``description_*`` in the ranking profile),
  full text on its rarest words only, and an embedding of the whole text rather than of
  its first 128 tokens.

Titles and keywords are searched with the profile's plain weights, as before.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from domain.discovery.documents import fold

TITLE, KEYWORDS, DESCRIPTION = "title", "keywords", "description"
CLASSES = (TITLE, KEYWORDS, DESCRIPTION)
#: more words than this and a query is a description (the intent parser agrees)
DESCRIPTION_WORDS = 8
TITLE_WORDS = 4
#: profile keys that replace a plain weight for descriptions: "description_vector" -> "vector"
DESCRIPTION_PREFIX = "description_"

#: words of forum-style descriptions that say nothing about the film; rare in overviews,
#: so an IDF selection would otherwise prize them
_FILLER = frozenset(
    """movie movies film films flick remember remembered recall think thought guess maybe
    probably pretty sure kinda sort watched watch watching saw seen seeing scene scenes
    someone somebody something thing things stuff name title called looking trying find
    help anyone anybody know knew forgot forget actually basically really lot lots whole
    part ending ago ever also still even just like ones way got gets getting goes going
    went tv cable channel dvd vhs theater theatre cinema version plot""".split()  # noqa: SIM905
)

_SENTENCE = re.compile(r"(?<=[.!?;])\s+|\s+(?:-{1,2}|\u2013|\u2014)\s+")


def classify(text: str) -> str:
    words = len(fold(text).split())
    if words > DESCRIPTION_WORDS:
        return DESCRIPTION
    if words > TITLE_WORDS:
        return KEYWORDS
    return TITLE


def class_weights(weights: Mapping[str, float], query_class: str) -> dict[str, float]:
    """The weights a query of ``query_class`` is fused and re-ranked with: the profile's,
    with its ``description_*`` entries in place of the plain ones for a description."""
    out = {k: v for k, v in weights.items() if not k.startswith(DESCRIPTION_PREFIX)}
    if query_class == DESCRIPTION:
        for key, value in weights.items():
            if key.startswith(DESCRIPTION_PREFIX):
                out[key[len(DESCRIPTION_PREFIX) :]] = value
    return out


def windows(text: str, size: int = 40, overlap: int = 10) -> list[str]:
    """A long text in overlapping windows of about ``size`` words, cut at sentence ends
    where there are some: the embedding model reads 128 tokens, so a paragraph is embedded
    window by window and the passes pooled, instead of losing its tail."""
    words = text.split()
    if len(words) <= size:
        return [text.strip()] if text.strip() else []
    sentences = [s.split() for s in _SENTENCE.split(text) if s.strip()]
    out: list[list[str]] = []
    current: list[str] = []
    for sentence in sentences:
        while len(sentence) > size:  # one very long sentence: cut it
            head, sentence = sentence[:size], sentence[size - overlap :]
            if current:
                out.append(current)
                current = []
            out.append(head)
        if current and len(current) + len(sentence) > size:
            out.append(current)
            current = current[-overlap:] if overlap and len(current) > overlap else []
        current = current + sentence
    if current and (not out or current != out[-1][-len(current) :]):
        out.append(current)
    return [" ".join(w) for w in out]


def content_words(text: str) -> str:
    """``text`` without forum filler ("I remember a scene in a movie..."): words that say
    nothing of the film yet are rare in overviews, so an IDF selection would prize them."""
    return " ".join(w for w in fold(text).split() if w not in _FILLER)


def salient_terms(
    lexemes: Iterable[str],
    doc_freq: Mapping[str, int],
    docs: int,
    *,
    limit: int = 24,
    max_share: float = 0.10,
) -> list[tuple[str, float]]:
    """The query's rarest lexemes that the catalog holds, with their IDF (BM25's form),
    rarest first: a description is matched on what distinguishes it ("robot", "probe",
    "earth"), not on every word it shares with half the catalog ("man", "life", "find").
    Words no document has cannot match and are dropped; so are words in more than
    ``max_share`` of the documents. ``lexemes`` come from ``content_words``."""
    out: dict[str, float] = {}
    ceiling = max(1, int(docs * max_share))
    for lex in lexemes:
        df = doc_freq.get(lex, 0)
        if df == 0 or df > ceiling or lex in out or len(lex) < 3:
            continue
        out[lex] = math.log((docs - df + 0.5) / (df + 0.5) + 1)
    return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))[:limit]
