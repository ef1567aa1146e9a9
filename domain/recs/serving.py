"""Turning scores into a list a person reads: the per-user correction, diversity, reasons.

No I/O. The per-user correction is what this project means by per-user adaptation (the
design card calls it LoRA): a small linear correction over title features (genres here),
learned from the user's explicit feedback only. Every "not interested" or dislike moves
the user's vector away from that title's genres, every "more like this" or like moves it
toward them; the vector is the normalised sum of those moves, recomputed from the facts
at request time, so it changes the very next answer and replays like everything else.
It is not a low-rank adapter of a neural network: the shared model here is an item-item
model, and this correction sits on top of its scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

#: how much the correction can move a score, against model scores normalised to 1
CORRECTION_WEIGHT = 0.25
#: MMR trade-off: 1.0 is pure relevance
DIVERSITY_LAMBDA = 0.8
#: prior for titles the model does not know (new titles, cold start), against 1.0
POPULARITY_PRIOR = 0.05


def normalised(scores: np.ndarray) -> np.ndarray:
    """Scores over the user's best positive score: 1.0 is the top pick."""
    top = float(scores.max()) if scores.size else 0.0
    return scores / top if top > 1e-12 else np.zeros_like(scores)


def correction_vector(
    features: sp.csr_matrix, items: Sequence[int], signs: Sequence[float]
) -> np.ndarray | None:
    """The user's correction over feature columns: the signed, L2-normalised sum of the
    feature rows of the titles they gave explicit feedback on; None without any."""
    if not items:
        return None
    rows = features[np.asarray(items)]
    v = np.asarray(rows.T @ np.asarray(signs, dtype=np.float32)).ravel()
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else None


def correction_scores(features: sp.csr_matrix, vector: np.ndarray) -> np.ndarray:
    """Each title's cosine-like agreement with the correction vector (rows of
    ``features`` are L2-normalised), times the correction weight."""
    return np.asarray(features @ vector, dtype=np.float32).ravel() * CORRECTION_WEIGHT


def mmr(
    candidates: Sequence[int],
    relevance: Sequence[float],
    features: sp.csr_matrix,
    k: int,
    lam: float = DIVERSITY_LAMBDA,
) -> list[int]:
    """Maximal marginal relevance: pick ``k`` of ``candidates`` (best first), each time
    the one with the best ``lam * relevance - (1 - lam) * max similarity to those picked``;
    similarity is the cosine of the (L2-normalised) feature rows."""
    if not candidates:
        return []
    cand = np.asarray(candidates)
    rel = np.asarray(relevance, dtype=np.float64)
    span = float(rel.max() - rel.min())
    rel = (rel - rel.min()) / span if span > 0 else np.ones_like(rel)
    f = features[cand]
    sim = np.asarray((f @ f.T).todense(), dtype=np.float64)
    picked: list[int] = []
    best_sim = np.zeros(len(cand))
    free = np.ones(len(cand), dtype=bool)
    for _ in range(min(k, len(cand))):
        gain = np.where(free, lam * rel - (1 - lam) * best_sim, -np.inf)
        j = int(np.argmax(gain))
        picked.append(j)
        free[j] = False
        best_sim = np.maximum(best_sim, sim[j])
    return [int(cand[j]) for j in picked]


@dataclass(frozen=True, slots=True)
class Because:
    """What made a title's score: a title from the user's history and what they did."""

    title: str
    did: str  # watched, watching, rated, watchlisted, asked, liked


def reason_text(because: Because | None, *, trending_on: str | None = None) -> str:
    if because is not None:
        return {
            "watched": f"Because you watched {because.title}",
            "rated": f"Because you rated {because.title}",
            "watchlisted": f"Because {because.title} is on your watchlist",
            "asked": f"Because you asked for more like {because.title}",
            "watching": f"Because you are watching {because.title}",
        }.get(because.did, f"Because you liked {because.title}")
    if trending_on:
        return f"Trending on {trending_on}"
    return "Popular right now"


#: how far a search result can climb on the user's taste: a perfect match multiplies its
#: relevance by 1 + PERSONALIZE_WEIGHT, so relevance still decides between unlike titles
PERSONALIZE_WEIGHT = 0.5


def personalized_order(relevance: Sequence[float], affinity: Sequence[float]) -> list[int]:
    """Indexes of search results re-ranked by the user's affinity (0..1 each; negative
    counts as 0): ``relevance * (1 + PERSONALIZE_WEIGHT * affinity)``, ties in the
    original order."""
    boosted = [
        r * (1.0 + PERSONALIZE_WEIGHT * min(max(a, 0.0), 1.0))
        for r, a in zip(relevance, affinity, strict=True)
    ]
    return sorted(range(len(boosted)), key=lambda i: (-boosted[i], i))
