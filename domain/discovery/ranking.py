"""Ranking profiles: the weights hybrid search fuses and re-ranks with.

Search runs three retrievers (PostgreSQL full text, pg_trgm title similarity and
the embedding index) and fuses their rankings with weighted reciprocal rank fusion:
``score(d) = sum_r weight_r / (rrf_k + rank_r(d))``. A re-rank then adds small boosts
(exact title, catalog quality, popularity, availability, freshness). A profile is a
named, versioned set of those weights; admins change them without a deploy.

Partial updates are merged onto a base (the profile's current weights), so a client
may send only the weight it changes. Weights read back from stored events go through
``effective_weights``, which tolerates keys and bounds from other code versions: a
replay of an old log always yields a usable profile.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

DEFAULT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "rrf_k": 60.0,  # reciprocal rank fusion constant
        "fulltext": 1.0,  # weight of the PostgreSQL full-text retriever's RRF term
        "trigram": 0.8,  # weight of the pg_trgm title-similarity retriever
        "vector": 1.0,  # weight of the semantic (embedding) retriever
        "title_match": 1.0,  # re-rank: the query is the title (or its start, or a typo of it)
        "quality": 0.15,  # re-rank: catalog quality score (0..1)
        "popularity": 1.0,  # re-rank: popularity (0..1, log-scaled plays)
        "availability": 0.10,  # re-rank: watchable in the user's region/platforms
        "freshness": 0.05,  # re-rank: recently added
        # a description (more than eight words; domain/discovery/query_class.py) is fused
        # and re-ranked with these in place of the plain weights of the same name
        "description_rrf_k": 60.0,
        "description_fulltext": 0.25,
        "description_vector": 1.0,
        "description_popularity": 1.0,
        "description_quality": 0.15,
    }
)

#: inclusive bounds per weight: rrf_k (of any class) 1..1000, every other weight 0..10
BOUNDS: Mapping[str, tuple[float, float]] = MappingProxyType(
    {k: ((1.0, 1000.0) if k.endswith("rrf_k") else (0.0, 10.0)) for k in DEFAULT_WEIGHTS}
)

PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
DESCRIPTION_MAX = 500


class WeightError(ValueError):
    """A weight that cannot be accepted; ``key`` names it (``None``: the whole mapping)."""

    def __init__(self, key: str | None, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class RankingProfile:
    name: str
    version: int
    weights: Mapping[str, float]
    description: str = ""


DEFAULT_PROFILE = RankingProfile("default", 0, DEFAULT_WEIGHTS, "built-in defaults")


def validate_profile_name(name: str) -> str:
    """The name back if it is 1-64 of a-z, 0-9, '_' and '-' (not starting with '_'/'-')."""
    if not isinstance(name, str) or not PROFILE_NAME.match(name):
        raise ValueError(
            "profile names are 1-64 characters of a-z, 0-9, '_' and '-',"
            " starting with a letter or digit"
        )
    return name


def validate_weights(
    raw: Mapping[str, object], *, base: Mapping[str, float] = DEFAULT_WEIGHTS
) -> dict[str, float]:
    """``raw`` merged onto ``base``: the full set of weights, every one known and in bounds.

    Raises ``WeightError`` (a ValueError) naming the first offending key: an unknown key
    (the message lists the known ones), a value that is not a finite number (booleans are
    not numbers here), or a value outside its bounds."""
    if not isinstance(raw, Mapping):
        raise WeightError(None, "weights must be an object of weight name -> number")
    merged = {k: float(base.get(k, v)) for k, v in DEFAULT_WEIGHTS.items()}
    for key, value in raw.items():
        if key not in DEFAULT_WEIGHTS:
            known = ", ".join(DEFAULT_WEIGHTS)
            raise WeightError(str(key), f"unknown weight {key!r}; known weights: {known}")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise WeightError(key, f"{key} must be a number")
        lo, hi = BOUNDS[key]
        number = float(value)
        if not math.isfinite(number) or not lo <= number <= hi:
            raise WeightError(key, f"{key} must be between {lo:g} and {hi:g}")
        merged[key] = number
    return merged


def effective_weights(stored: Mapping[str, object]) -> dict[str, float]:
    """Weights as a stored event recorded them, made usable whatever code wrote them:
    unknown keys are dropped, missing ones take their default, numbers are clamped to
    today's bounds and anything else falls back to the default."""
    out: dict[str, float] = {}
    for key, default in DEFAULT_WEIGHTS.items():
        value = stored.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            out[key] = default
            continue
        number = float(value)
        if not math.isfinite(number):
            out[key] = default
            continue
        lo, hi = BOUNDS[key]
        out[key] = min(max(number, lo), hi)
    return out
