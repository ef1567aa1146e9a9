"""The statistics an experiment's results are read with. Pure: counts in, numbers out.

* **Per-user rates** (play_start_rate, completion_rate: the share of exposed users who
  did it at least once): two-proportion z-test. The p-value uses the pooled proportion
  (the variance under "no difference"), the confidence interval the unpooled one.
* **CTR** (clicks / impressions over all of a variant's exposed users) is a ratio of two
  per-user sums, so its variance comes from the delta method over per-user
  (clicks, impressions) pairs: users, not impressions, are what was randomised, and one
  user's impressions are not independent of each other.
* **Always-valid p-values**: the normal mixture SPRT (mSPRT) of Johari, Pekelis and
  Walsh (2017), "Always valid inference: continuous monitoring of A/B tests". With the
  difference estimate θ̂, its variance V and a N(0, τ²) mixture over effects,
  Λ = sqrt(V / (V + τ²)) · exp(θ̂² τ² / (2 V (V + τ²))) and p = min(1, 1/Λ). Rejecting
  whenever p ≤ α at any look, however often one looks, keeps the false positive rate at
  most α; the fixed-horizon p-value only does so when read once, at a size fixed in
  advance. τ is ``MIXING_SD`` standard deviations of the metric: the effect size the
  test is most sensitive to.
* **Sample ratio mismatch**: Pearson's chi-squared test of users per variant against the
  configured weights; p < ``SRM_ALPHA`` means assignment or exposure logging is broken
  and the comparisons cannot be trusted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


def _scipy_stats() -> Any:
    """scipy.stats, imported when a result is computed: it takes half a second, and every
    process that loads the projector registry would pay it at start-up."""
    from scipy import stats

    return stats


ALPHA = 0.05
SRM_ALPHA = 0.001
#: the mSPRT mixture's standard deviation, in standard deviations of one user's metric
MIXING_SD = 0.1


@dataclass(frozen=True, slots=True)
class Comparison:
    """A treatment minus control. Fields are None where the data cannot say (a variant
    with no users, a metric with no variance)."""

    control: float | None
    treatment: float | None
    diff: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    p_value_always_valid: float | None

    def significant(self, alpha: float = ALPHA, *, always_valid: bool = False) -> bool:
        p = self.p_value_always_valid if always_valid else self.p_value
        return p is not None and p < alpha

    def as_dict(self) -> dict[str, float | None]:
        return {
            "control": self.control,
            "treatment": self.treatment,
            "diff": self.diff,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "p_value": self.p_value,
            "p_value_always_valid": self.p_value_always_valid,
        }


def _z(alpha: float) -> float:
    return float(_scipy_stats().norm.ppf(1 - alpha / 2))


def _two_sided_p(z: float) -> float:
    return float(2 * _scipy_stats().norm.sf(abs(z)))


def msprt_p_value(diff: float, var: float, tau2: float) -> float:
    """1/Λ of the normal-mixture SPRT for H0: θ = 0 (capped at 1). ``var`` is the
    variance of the estimate ``diff``; ``tau2`` the mixture variance over effects.
    Evaluated at every look, "reject when ≤ α" is the always-valid test; the running
    minimum over looks is the always-valid p-value proper, and is never larger."""
    if var <= 0 or tau2 <= 0:
        raise ValueError("variances must be positive")
    log_lambda = 0.5 * math.log(var / (var + tau2)) + diff * diff * tau2 / (2 * var * (var + tau2))
    return 1.0 if log_lambda <= 0 else math.exp(-log_lambda)


def _compare(
    control: float,
    treatment: float,
    var_null: float,
    var_ci: float,
    sd: float,
    alpha: float,
) -> Comparison:
    diff = treatment - control
    if var_null <= 0 or var_ci <= 0:
        return Comparison(control, treatment, diff, None, None, None, None)
    half = _z(alpha) * math.sqrt(var_ci)
    p = _two_sided_p(diff / math.sqrt(var_null))
    p_av = msprt_p_value(diff, var_null, (MIXING_SD * sd) ** 2) if sd > 0 else None
    return Comparison(control, treatment, diff, diff - half, diff + half, p, p_av)


def two_proportions(x_a: int, n_a: int, x_b: int, n_b: int, *, alpha: float = ALPHA) -> Comparison:
    """Control ``x_a`` of ``n_a`` against treatment ``x_b`` of ``n_b``."""
    if n_a <= 0 or n_b <= 0:
        pa = x_a / n_a if n_a > 0 else None
        pb = x_b / n_b if n_b > 0 else None
        return Comparison(pa, pb, None, None, None, None, None)
    pa, pb = x_a / n_a, x_b / n_b
    pooled = (x_a + x_b) / (n_a + n_b)
    var_null = pooled * (1 - pooled) * (1 / n_a + 1 / n_b)
    var_ci = pa * (1 - pa) / n_a + pb * (1 - pb) / n_b
    return _compare(pa, pb, var_null, var_ci, math.sqrt(pooled * (1 - pooled)), alpha)


@dataclass(frozen=True, slots=True)
class RatioSample:
    """Per-user sums for a ratio metric Σy/Σx over n users (CTR: y clicks, x
    impressions), with the second moments the delta method needs."""

    n: int
    sum_x: float
    sum_y: float
    sum_x2: float
    sum_y2: float
    sum_xy: float

    @property
    def ratio(self) -> float | None:
        return self.sum_y / self.sum_x if self.sum_x > 0 else None

    def variance(self) -> float | None:
        """Var(Σy/Σx) by the delta method: (σ²_y − 2Rσ_xy + R²σ²_x) / (n μ_x²), with
        sample (n − 1) moments of the per-user values."""
        r = self.ratio
        if r is None or self.n < 2:
            return None
        n = self.n
        mx = self.sum_x / n
        var_x = (self.sum_x2 - n * mx * mx) / (n - 1)
        var_y = (self.sum_y2 - self.sum_y * self.sum_y / n) / (n - 1)
        cov = (self.sum_xy - self.sum_x * self.sum_y / n) / (n - 1)
        return max(0.0, (var_y - 2 * r * cov + r * r * var_x) / (n * mx * mx))


def ratios(a: RatioSample, b: RatioSample, *, alpha: float = ALPHA) -> Comparison:
    """Control ``a`` against treatment ``b`` on a ratio metric (delta method, z-test)."""
    ra, rb = a.ratio, b.ratio
    va, vb = a.variance(), b.variance()
    if ra is None or rb is None or va is None or vb is None:
        return Comparison(ra, rb, None if ra is None or rb is None else rb - ra, *[None] * 4)
    var = va + vb
    # one user's metric has standard deviation sqrt(n Var(R)); pooled over both arms
    sd = math.sqrt((a.n * va + b.n * vb) / 2)
    return _compare(ra, rb, var, var, sd, alpha)


@dataclass(frozen=True, slots=True)
class Srm:
    chi2: float
    p_value: float
    expected: tuple[float, ...]

    @property
    def mismatch(self) -> bool:
        return self.p_value < SRM_ALPHA


def sample_ratio(observed: Sequence[int], weights: Sequence[float]) -> Srm | None:
    """Chi-squared goodness of fit of users per variant to the weights; None with no
    users yet."""
    total = sum(observed)
    if total == 0:
        return None
    wsum = float(sum(weights))
    expected = [total * w / wsum for w in weights]
    chi2, p = _scipy_stats().chisquare(list(observed), expected)
    return Srm(float(chi2), float(p), tuple(expected))
