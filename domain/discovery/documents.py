"""What a title's search document holds, computed without I/O.

A search document is the catalog row reduced to what retrieval needs: a folded title for
trigram and prefix matching, the text the embedding model reads, and availability as
``region|platform|offer_type`` keys. The keys carry ``*`` wildcards so that any filter
(region only, platform only, region and offer type, ...) is one array-overlap test, the
same in PostgreSQL (``offer_keys && $keys``) and in a Qdrant payload (``MatchAny``).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from collections.abc import Iterable, Sequence

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)
ANY = "*"

#: PostgreSQL's english.stop list (Snowball), plus the filler of described searches
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you your yours yourself yourselves he him his
    himself she her hers herself it its itself they them their theirs themselves what which
    who whom this that these those am is are was were be been being have has had having do
    does did doing a an the and but if or because as until while of at by for with about
    against between into through during before after above below to from up down in out on
    off over under again further then once here there when where why how all any both each
    few more most other some such no nor not only own same so than too very s t can will
    just don should now d ll m o re ve y ain aren couldn didn doesn hadn hasn haven isn ma
    mightn mustn needn shan shouldn wasn weren won wouldn
    movie film remember trying find watched think something""".split()  # noqa: SIM905
)

#: plays at which popularity reaches 1.0 (log-scaled below it)
POPULARITY_SATURATION = 1000


def fold(text: str) -> str:
    """Lower case, accents and punctuation gone, whitespace collapsed."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    text = text.replace("&", " and ").replace("'", "").replace("\u2019", "")
    return " ".join(_NON_WORD.sub(" ", text).split())


def offer_keys(offers: Iterable[tuple[str, str, str]]) -> list[str]:
    """Every key an offer (region, platform, offer_type) answers to, wildcards included."""
    keys: set[str] = set()
    for region, platform, offer_type in offers:
        for r in (region, ANY):
            for p in (platform, ANY):
                for t in (offer_type, ANY):
                    keys.add(f"{r}|{p}|{t}")
    keys.discard(f"{ANY}|{ANY}|{ANY}")
    return sorted(keys)


def filter_keys(
    region: str | None, platforms: Sequence[str], offer_types: Sequence[str]
) -> list[str] | None:
    """The keys a document must have one of to pass an availability filter; None when
    the filter asks nothing about availability."""
    if region is None and not platforms and not offer_types:
        return None
    regions = [region] if region else [ANY]
    return sorted(
        f"{r}|{p}|{t}"
        for r in regions
        for p in (platforms or [ANY])
        for t in (offer_types or [ANY])
    )


def embedding_text(
    title: str,
    original_title: str | None,
    genres: Sequence[str],
    overview: str | None,
    keywords: Sequence[str] = (),
) -> str:
    """What the embedding model reads for a title: names first (they survive truncation),
    then genres and subject keywords, then the overview. (Without the genres, a 32-query
    probe gained recall but `mgw eval search` lost vector nDCG: docs/embeddings.md.)"""
    parts = [title]
    if original_title and fold(original_title) != fold(title):
        parts.append(original_title)
    if genres:
        parts.append(", ".join(genres))
    if keywords:
        parts.append(", ".join(keywords[:12]))
    if overview:
        parts.append(overview)
    return ". ".join(p.strip().rstrip(".") for p in parts if p.strip())


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def popularity(plays: int) -> float:
    """0..1, log-scaled: the first plays matter most."""
    if plays <= 0:
        return 0.0
    return min(1.0, math.log1p(plays) / math.log1p(POPULARITY_SATURATION))
