"""Fusing the retrievers' rankings and re-ranking the fused list.

Reciprocal rank fusion (Cormack, Clarke and Buettcher, 2009) adds ``w / (k + rank)`` over
the retrievers that returned a title. It needs no score calibration between BM25-like
ranks, trigram similarities and cosine distances, which live on unrelated scales.

The re-rank multiplies the fused score by ``1 + sum(w_f * feature_f)``: features in
0..1 (quality, popularity, watchable here, freshness, exact title) lift a title within
the band the retrievers put it in rather than pulling an unrelated popular title to the
top.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from rapidfuzz import fuzz

RETRIEVERS = ("fulltext", "trigram", "vector")
FEATURES = ("title_match", "quality", "popularity", "availability", "freshness")


@dataclass(slots=True)
class Candidate:
    content_id: str
    fused: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    score: float = 0.0


def rrf(
    rankings: Mapping[str, Sequence[str]],
    weights: Mapping[str, float],
    scales: Mapping[str, Mapping[str, float]] | None = None,
) -> dict[str, Candidate]:
    """Fused candidates by id; ``rankings`` maps a retriever to its ids, best first.
    ``scales`` (0..1 per retriever and id) shrinks a term by how well the retriever
    itself thinks the title matched: a trigram hit that shares a word with the query
    is not a title match."""
    k = weights.get("rrf_k", 60.0)
    out: dict[str, Candidate] = {}
    for retriever, ids in rankings.items():
        w = weights.get(retriever, 1.0)
        for rank, cid in enumerate(ids, start=1):
            c = out.get(cid)
            if c is None:
                c = out[cid] = Candidate(cid)
            if retriever not in c.ranks:  # a retriever counts once per title
                c.ranks[retriever] = rank
                scale = scales.get(retriever, {}).get(cid, 1.0) if scales else 1.0
                c.fused += w * scale / (k + rank)
    return out


def title_match(query_key: str, title_key: str) -> float:
    """1 when the query is the title, 0.8 when it is the title's first words, then
    falling with edit similarity to 0 at 75 % (typos of a whole title land between);
    both sides folded and without a leading article."""
    if not query_key or not title_key:
        return 0.0
    if query_key == title_key:
        return 1.0
    if len(query_key) >= 4 and title_key.startswith(query_key + " "):
        return 0.8
    r = fuzz.ratio(query_key, title_key) / 100
    return round(max(0.0, (r - 0.75) / 0.25) * 0.9, 4)


def freshness(first_seen: datetime | None, now: datetime, half_life_days: float) -> float:
    if first_seen is None or half_life_days <= 0:
        return 0.0
    age = max(0.0, (now - first_seen).total_seconds() / 86400)
    return math.pow(2.0, -age / half_life_days)


def rerank(candidates: Sequence[Candidate], weights: Mapping[str, float]) -> list[Candidate]:
    """Final order: exact title matches first, then the fused score lifted by the
    weighted features; ties by id, so a page boundary falls in the same place on every
    request."""
    for c in candidates:
        lift = sum(weights.get(f, 0.0) * c.features.get(f, 0.0) for f in FEATURES)
        c.score = c.fused * (1.0 + lift)
    # a query that is exactly a title puts that title first ("heat", "up", "it"), whatever
    # the retrievers' agreement on longer titles containing it
    return sorted(
        candidates,
        key=lambda c: (c.features.get("title_match", 0.0) < 1.0, -c.score, c.content_id),
    )


def browse_score(features: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Order of the browse list (no text): the re-rank features alone."""
    return sum(weights.get(f, 0.0) * features.get(f, 0.0) for f in FEATURES)
