"""domain/experiments: GrowthBook hashing, the tests' arithmetic against hand-computed
cases, SRM, and a simulation showing why results carry an always-valid p-value."""

from __future__ import annotations

import math

import numpy as np
import pytest

from domain.experiments.assignment import bucket, fnv1a32, ranges, variant_index
from domain.experiments.results import VariantCounts, analyse
from domain.experiments.stats import (
    MIXING_SD,
    RatioSample,
    msprt_p_value,
    ratios,
    sample_ratio,
    two_proportions,
)

# -- assignment --------------------------------------------------------------------


def test_fnv1a32_reference_vectors() -> None:
    # draft-eastlake-fnv test vectors
    assert fnv1a32("") == 0x811C9DC5
    assert fnv1a32("a") == 0xE40C292C
    assert fnv1a32("foobar") == 0xBF9CF968


@pytest.mark.parametrize(
    ("seed", "user", "expected"),
    [
        # GrowthBook's SDK test cases (packages/sdk-js/test/cases.json, hashVersion 2)
        ("experiment", "1", 0.4413),
        ("holdout", "1", 0.8043),
        ("feature-exp", "d123", 0.6468),
        ("feature-exp", "i123", 0.9943),
    ],
)
def test_bucket_matches_growthbook_hash_v2(seed: str, user: str, expected: float) -> None:
    assert bucket(seed, user) == expected


def test_variants_follow_growthbook_ranges() -> None:
    weights = [0.3334, 0.3333, 0.3333]  # the same cases.json experiment
    assert ranges(weights) == [(0.0, 0.3334), (0.3334, 0.6667), (0.6667, 1.0)]
    assert variant_index("feature-exp", "d123", weights) == 1
    assert variant_index("feature-exp", "i123", weights) == 2
    assert ranges([50, 50]) == [(0.0, 0.5), (0.5, 1.0)]
    assert ranges([1, 3]) == [(0.0, 0.25), (0.25, 1.0)]
    with pytest.raises(ValueError):
        ranges([1, 0])


def test_assignment_is_deterministic_and_splits_by_weight() -> None:
    users = [f"user-{i}" for i in range(20_000)]
    first = [variant_index("recs-ease", u, [20, 80]) for u in users]
    assert first == [variant_index("recs-ease", u, [20, 80]) for u in users]
    share = first.count(0) / len(users)
    assert 0.19 < share < 0.21
    # another seed reshuffles users independently of this one
    other = [variant_index("recs-other", u, [50, 50]) for u in users]
    both = sum(1 for a, b in zip(first, other, strict=True) if a == 0 and b == 0) / len(users)
    assert abs(both - 0.2 * 0.5) < 0.01


# -- fixed-horizon tests -----------------------------------------------------------


def test_two_proportions_hand_computed() -> None:
    c = two_proportions(100, 1000, 130, 1000)
    # pooled p = 0.115; se0 = sqrt(0.115 * 0.885 * 2 / 1000) = 0.0142671; z = 2.10274
    assert c.diff == pytest.approx(0.03)
    assert c.p_value == pytest.approx(0.035485, abs=1e-5)
    # unpooled se = sqrt(0.1*0.9/1000 + 0.13*0.87/1000) = 0.0142513; 1.959964 * se
    assert c.ci_low == pytest.approx(0.03 - 0.0279320, abs=1e-6)
    assert c.ci_high == pytest.approx(0.03 + 0.0279320, abs=1e-6)
    assert c.significant()
    same = two_proportions(100, 1000, 100, 1000)
    assert same.diff == 0 and same.p_value == pytest.approx(1.0)
    empty = two_proportions(0, 0, 3, 10)
    assert empty.diff is None and empty.p_value is None and empty.treatment == 0.3


def test_ratio_delta_method_hand_computed() -> None:
    # four users: (impressions, clicks) = (2, 1), (4, 1), (0, 0), (2, 2)
    x = np.array([2, 4, 0, 2.0])
    y = np.array([1, 1, 0, 2.0])
    s = RatioSample(4, x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum())
    r = 4 / 8
    cov = np.cov(x, y)  # sample (n - 1) moments
    expected = (cov[1, 1] - 2 * r * cov[0, 1] + r * r * cov[0, 0]) / (4 * 2.0**2)
    assert s.ratio == r
    assert s.variance() == pytest.approx(expected)


def test_ratio_delta_method_matches_simulated_variance() -> None:
    rng = np.random.default_rng(7)
    n, runs = 400, 3000
    imp = rng.poisson(6, size=(runs, n))
    clk = rng.binomial(imp, rng.beta(2, 18, size=(runs, n)))
    observed = (clk.sum(1) / imp.sum(1)).var(ddof=1)
    delta = np.mean(
        [
            RatioSample(n, a.sum(), b.sum(), (a * a).sum(), (b * b).sum(), (a * b).sum()).variance()
            for a, b in zip(imp[:300].astype(float), clk[:300].astype(float), strict=True)
        ]
    )
    assert delta == pytest.approx(observed, rel=0.15)


def test_ratio_comparison_flags_a_real_ctr_lift() -> None:
    rng = np.random.default_rng(3)

    def sample(ctr: float) -> RatioSample:
        imp = rng.poisson(10, 5000).astype(float)
        clk = rng.binomial(imp.astype(int), ctr).astype(float)
        return RatioSample(
            5000, imp.sum(), clk.sum(), (imp**2).sum(), (clk**2).sum(), (imp * clk).sum()
        )

    lift = ratios(sample(0.10), sample(0.11))
    assert lift.diff is not None and 0.005 < lift.diff < 0.015
    assert lift.p_value is not None and lift.p_value < 0.001
    assert lift.ci_low is not None and lift.ci_low > 0


# -- SRM ---------------------------------------------------------------------------


def test_srm_flags_55_45_of_10000_on_50_50_but_not_50_3_49_7() -> None:
    skewed = sample_ratio([5500, 4500], [50, 50])
    assert skewed is not None and skewed.mismatch and skewed.chi2 == pytest.approx(100.0)
    fine = sample_ratio([5030, 4970], [50, 50])
    assert fine is not None and not fine.mismatch and fine.p_value > 0.5
    assert sample_ratio([0, 0], [1, 1]) is None
    # weights are shares: 1:3 with 2,500 / 7,500 is exactly as configured
    exact = sample_ratio([2500, 7500], [1, 3])
    assert exact is not None and exact.p_value == pytest.approx(1.0)


# -- mSPRT -------------------------------------------------------------------------


def test_msprt_p_value_hand_computed() -> None:
    # V = 1e-4, tau^2 = 4e-4: Lambda = sqrt(1/5) * exp(diff^2 * 4e-4 / (2e-4 * 5e-4))
    diff = 0.03
    lam = math.sqrt(0.2) * math.exp(diff * diff * 4e-4 / (2 * 1e-4 * 5e-4))
    assert msprt_p_value(diff, 1e-4, 4e-4) == pytest.approx(1 / lam)
    assert msprt_p_value(0.0, 1e-4, 4e-4) == 1.0  # no evidence: capped at 1
    c = two_proportions(100, 1000, 130, 1000)
    # always valid costs power: at one look it is more conservative than the z-test
    assert c.p_value_always_valid is not None and c.p_value is not None
    assert c.p_value_always_valid > c.p_value


def test_peeking_aa_tests_msprt_holds_alpha_naive_p_value_does_not() -> None:
    """500 A/A experiments (conversion 10% in both arms), each read at 20 looks of 500
    more users per arm. Stopping at the first look with p < 0.05: the fixed-horizon
    p-value finds a "winner" far more often than 5%; the always-valid one does not."""
    rng = np.random.default_rng(20170101)
    runs, looks, step, p, alpha = 500, 20, 500, 0.10, 0.05
    xa = rng.binomial(step, p, size=(runs, looks)).cumsum(1)
    xb = rng.binomial(step, p, size=(runs, looks)).cumsum(1)
    naive = np.zeros(runs, dtype=bool)
    valid = np.zeros(runs, dtype=bool)
    for run in range(runs):
        for look in range(looks):
            n = step * (look + 1)
            c = two_proportions(int(xa[run, look]), n, int(xb[run, look]), n)
            assert c.p_value is not None and c.p_value_always_valid is not None
            naive[run] |= c.p_value < alpha
            valid[run] |= c.p_value_always_valid < alpha
    assert valid.mean() <= 0.08, valid.mean()
    assert naive.mean() > 0.10, naive.mean()
    assert MIXING_SD > 0


# -- the results document ----------------------------------------------------------


def test_analyse_reports_guardrail_breach_when_treatment_is_worse() -> None:
    control = VariantCounts("control", 50, users=4000, play_start_users=2000,
                            completion_users=1200)  # fmt: skip
    worse = VariantCounts("treatment", 50, users=4000, play_start_users=2010,
                          completion_users=900)  # fmt: skip
    out = analyse(
        [control, worse], primary_metric="play_start_rate", guardrail_metrics=["completion_rate"]
    )
    assert out["srm"] is False
    assert [b["metric"] for b in out["guardrail_breaches"]] == ["completion_rate"]
    cmp = out["comparisons"][0]["metrics"]
    assert cmp["completion_rate"]["diff"] == pytest.approx(-0.075)
    assert cmp["play_start_rate"]["p_value"] > 0.5
    assert cmp["ctr"]["diff"] is None  # no impressions: nothing to say
    assert out["variants"][0]["completion_rate"] == pytest.approx(0.3)
