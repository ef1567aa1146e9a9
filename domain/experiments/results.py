"""An experiment's results from per-variant counts: rates, comparisons with the control
(the first variant), the sample ratio check and guardrail breaches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from domain.experiments.stats import (
    ALPHA,
    Comparison,
    RatioSample,
    ratios,
    sample_ratio,
    two_proportions,
)


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """What a variant's exposed users did after their exposure. ``impressions`` and
    ``clicks`` are sums over users (with the per-user second moments for CTR's
    variance); ``play_start_users`` and ``completion_users`` count users who did it at
    least once."""

    name: str
    weight: int
    users: int = 0
    impressions: int = 0
    clicks: int = 0
    sum_impressions2: int = 0
    sum_clicks2: int = 0
    sum_impressions_clicks: int = 0
    play_start_users: int = 0
    completion_users: int = 0

    def ctr_sample(self) -> RatioSample:
        return RatioSample(
            self.users,
            self.impressions,
            self.clicks,
            self.sum_impressions2,
            self.sum_clicks2,
            self.sum_impressions_clicks,
        )

    def as_dict(self) -> dict[str, Any]:
        n = self.users
        return {
            "name": self.name,
            "weight": self.weight,
            "users": n,
            "impressions": self.impressions,
            "clicks": self.clicks,
            "play_start_users": self.play_start_users,
            "completion_users": self.completion_users,
            "ctr": self.clicks / self.impressions if self.impressions else None,
            "play_start_rate": self.play_start_users / n if n else None,
            "completion_rate": self.completion_users / n if n else None,
        }


def compare(
    control: VariantCounts, treatment: VariantCounts, alpha: float
) -> dict[str, Comparison]:
    return {
        "ctr": ratios(control.ctr_sample(), treatment.ctr_sample(), alpha=alpha),
        "play_start_rate": two_proportions(
            control.play_start_users, control.users,
            treatment.play_start_users, treatment.users, alpha=alpha,
        ),
        "completion_rate": two_proportions(
            control.completion_users, control.users,
            treatment.completion_users, treatment.users, alpha=alpha,
        ),
    }  # fmt: skip


def analyse(
    counts: Sequence[VariantCounts],
    *,
    primary_metric: str,
    guardrail_metrics: Sequence[str],
    alpha: float = ALPHA,
) -> dict[str, Any]:
    """The results document (docs/experiments.md describes each field).

    A guardrail is breached when a treatment is worse than the control on it (every
    metric here is higher-is-better) with an always-valid p-value below ``alpha``:
    guardrails are watched continuously, so only the peeking-safe test may raise them."""
    control = counts[0]
    comparisons = []
    breaches = []
    for treatment in counts[1:]:
        metrics = compare(control, treatment, alpha)
        comparisons.append(
            {
                "variant": treatment.name,
                "control": control.name,
                "metrics": {m: c.as_dict() for m, c in metrics.items()},
            }
        )
        for m in guardrail_metrics:
            c = metrics[m]
            if c.diff is not None and c.diff < 0 and c.significant(alpha, always_valid=True):
                breaches.append(
                    {
                        "variant": treatment.name,
                        "metric": m,
                        "diff": c.diff,
                        "p_value_always_valid": c.p_value_always_valid,
                    }
                )
    srm = sample_ratio([c.users for c in counts], [c.weight for c in counts])
    return {
        "primary_metric": primary_metric,
        "guardrail_metrics": list(guardrail_metrics),
        "alpha": alpha,
        "variants": [c.as_dict() for c in counts],
        "comparisons": comparisons,
        "srm": bool(srm and srm.mismatch),
        "srm_test": (
            {"chi2": srm.chi2, "p_value": srm.p_value, "expected_users": list(srm.expected)}
            if srm
            else None
        ),
        "guardrail_breaches": breaches,
    }
