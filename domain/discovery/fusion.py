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

RETRIEVERS = ("fulltext", "trigram", "vector")
FEATURES = ("exact_title", "quality", "popularity", "availability", "freshness")


@dataclass(slots=True)
class Candidate:
    content_id: str
    fused: float = 0.0
    ranks: dict[str, int] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)
    score: float = 0.0


def rrf(
    rankings: Mapping[str, Sequence[str]], weights: Mapping[str, float]
) -> dict[str, Candidate]:
    """Fused candidates by id; ``rankings`` maps a retriever to its ids, best first."""
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
                c.fused += w / (k + rank)
    return out


def freshness(first_seen: datetime | None, now: datetime, half_life_days: float) -> float:
    if first_seen is None or half_life_days <= 0:
        return 0.0
    age = max(0.0, (now - first_seen).total_seconds() / 86400)
    return math.pow(2.0, -age / half_life_days)


def rerank(candidates: Sequence[Candidate], weights: Mapping[str, float]) -> list[Candidate]:
    """Final order: fused score lifted by the weighted features; ties by id, so a page
    boundary falls in the same place on every request."""
    for c in candidates:
        lift = sum(weights.get(f, 0.0) * c.features.get(f, 0.0) for f in FEATURES)
        c.score = c.fused * (1.0 + lift)
    return sorted(candidates, key=lambda c: (-c.score, c.content_id))


def browse_score(features: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Order of the browse list (no text): the re-rank features alone."""
    return sum(weights.get(f, 0.0) * features.get(f, 0.0) for f in FEATURES)
