"""The quality score of a title, and its freshness boost. No I/O.

score = base + freshness, capped at 1, where
- base = 0.40 completeness (weighted share of the fields a full record has)
       + 0.25 agreement (share of sources agreeing on title, year, runtime, IMDb id)
       + 0.15 coverage (more platforms carrying it, log-scaled: 1 source 0.33, 7 sources 1)
       + 0.20 popularity (playback sessions, log-scaled: 1,000 sessions score 1);
- freshness = FRESH_WEIGHT * 2^(-age / half_life): a title that just arrived gets the
  whole boost, one half-life later half of it, so new arrivals surface for a while
  and then compete on quality alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

FRESH_WEIGHT = 0.15
DEFAULT_HALF_LIFE_DAYS = 14.0


@dataclass(frozen=True, slots=True)
class QualityScore:
    score: float
    base: float
    freshness: float
    completeness: float
    agreement: float
    coverage: float
    popularity: float

    def as_dict(self) -> dict[str, float]:
        return {
            "score": self.score,
            "base": self.base,
            "freshness": self.freshness,
            "completeness": self.completeness,
            "agreement": self.agreement,
            "coverage": self.coverage,
            "popularity": self.popularity,
        }


def freshness(first_seen: datetime, now: datetime, half_life_days: float) -> float:
    """FRESH_WEIGHT for a title seen just now, halving every half-life."""
    if half_life_days <= 0:
        return 0.0
    age_days = max(0.0, (now - first_seen).total_seconds() / 86400)
    return FRESH_WEIGHT * math.pow(2.0, -age_days / half_life_days)


def quality_score(
    *,
    completeness: float,
    agreement: float,
    source_count: int,
    plays: int,
    first_seen: datetime,
    now: datetime,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
) -> QualityScore:
    coverage = min(1.0, math.log2(1 + max(source_count, 0)) / 3)
    popularity = min(1.0, math.log10(1 + max(plays, 0)) / 3)
    base = 0.40 * completeness + 0.25 * agreement + 0.15 * coverage + 0.20 * popularity
    fresh = freshness(first_seen, now, half_life_days)
    r = 4
    return QualityScore(
        score=round(min(1.0, base + fresh), r),
        base=round(base, r),
        freshness=round(fresh, r),
        completeness=round(completeness, r),
        agreement=round(agreement, r),
        coverage=round(coverage, r),
        popularity=round(popularity, r),
    )
