"""The recommender's pure serving rules: signal weights, exclusions, the per-user
correction, diversity, reasons and personal search order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import scipy.sparse as sp

from domain.recs import serving, signals
from domain.recs.signals import Facts

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def test_weights_follow_what_an_action_costs_the_viewer() -> None:
    finished = signals.raw_weight(Facts(finished=1))
    liked = signals.raw_weight(Facts(rating=9))
    listed = signals.raw_weight(Facts(watchlisted=True))
    started = signals.raw_weight(Facts(started=True))
    clicked = signals.raw_weight(Facts(clicks=1))
    passed = signals.raw_weight(Facts(impressions=3))
    assert finished > listed > started > clicked > 0 > passed
    assert liked > listed
    assert signals.raw_weight(Facts(finished=1, not_interested=True)) < 0
    assert signals.raw_weight(Facts(finished=1, rating=2)) < 0
    assert signals.raw_weight(Facts(rating=5)) == 0  # a middling rating says little
    # rewatches add, up to a cap
    assert signals.raw_weight(Facts(finished=3)) > finished
    assert signals.raw_weight(Facts(finished=10)) == signals.raw_weight(Facts(finished=3))


def test_old_facts_count_less_but_never_vanish() -> None:
    f = Facts(finished=1)
    fresh = signals.weight(f, NOW, NOW)
    year = signals.weight(f, NOW - timedelta(days=365), NOW)
    ancient = signals.weight(f, NOW - timedelta(days=3650), NOW)
    assert fresh > year > ancient > 0
    assert abs(year - fresh / 2) < 1e-9
    assert ancient == fresh * signals.DECAY_FLOOR


def test_what_is_never_recommended() -> None:
    assert signals.excluded(Facts(finished=1))
    assert signals.excluded(Facts(started=True))
    assert signals.excluded(Facts(not_interested=True))
    assert signals.excluded(Facts(rating=8))  # rated: seen
    assert not signals.excluded(Facts(watchlisted=True, clicks=2, more_like_this=True))


def _features(rows: list[list[float]]) -> sp.csr_matrix:
    m = np.asarray(rows, dtype=np.float32)
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    return sp.csr_matrix(m)


def test_the_correction_learns_from_explicit_feedback_only() -> None:
    # titles 0, 1: comedy; 2, 3: horror
    feats = _features([[1, 0], [1, 0], [0, 1], [0, 1]])
    assert serving.correction_vector(feats, [], []) is None
    vec = serving.correction_vector(feats, [2], [-1.0])  # not interested in a horror film
    assert vec is not None
    s = serving.correction_scores(feats, vec)
    assert s[3] < 0 <= s[0]
    vec = serving.correction_vector(feats, [0, 2], [1.0, -1.0])
    assert vec is not None
    s = serving.correction_scores(feats, vec)
    assert s[1] > 0 > s[3]


def test_mmr_trades_a_little_relevance_for_variety() -> None:
    feats = _features([[1, 0], [1, 0], [1, 0], [0, 1]])
    rel = [1.0, 0.99, 0.98, 0.9]
    assert serving.mmr([0, 1, 2, 3], rel, feats, 2, lam=1.0) == [0, 1]
    assert serving.mmr([0, 1, 2, 3], rel, feats, 2, lam=0.5) == [0, 3]
    assert serving.mmr([], [], feats, 2) == []


def test_reasons_name_the_title_and_what_was_done() -> None:
    b = serving.Because("Heat", "watched")
    assert serving.reason_text(b) == "Because you watched Heat"
    assert serving.reason_text(serving.Because("Heat", "rated")) == "Because you rated Heat"
    assert serving.reason_text(None, trending_on="netflix") == "Trending on netflix"
    assert serving.reason_text(None) == "Popular right now"


def test_personal_order_lets_taste_lift_but_not_override_relevance() -> None:
    relevance = [1.0, 0.9, 0.5]
    assert serving.personalized_order(relevance, [0.0, 0.0, 0.0]) == [0, 1, 2]
    assert serving.personalized_order(relevance, [0.0, 1.0, 0.0]) == [1, 0, 2]
    # a loved title far less relevant stays below: 0.5 * 1.5 < 1.0
    assert serving.personalized_order(relevance, [0.0, 0.0, 1.0]) == [0, 1, 2]
    assert serving.personalized_order(relevance, [-3.0, 0.0, 0.0]) == [0, 1, 2]


def test_popularity_per_region_leans_on_the_whole_when_a_region_is_small() -> None:
    from projections.recs_engine import align, build_catalog
    from projections.recs_training import Artefact, build_matrix

    now = NOW
    facts = (1, False, None, False, 0, 0, False, False)  # finished once
    rows = [(f"u{u}", "a", *facts, now, now) for u in range(60)]  # everyone's favourite
    rows += [(f"fr{u}", "b", *facts, now, now) for u in range(40)]  # France's own
    rows += [("gb0", "c", *facts, now, now)]  # one viewer in Britain
    data = build_matrix(rows, now, {**{f"fr{u}": "FR" for u in range(40)}, "gb0": "GB"})
    assert set(data.regional) == {"FR", "GB"}
    catalog = build_catalog(
        [(c, "movie", c.upper(), 2000, ["Drama"], None, [], 0.0) for c in ("a", "b", "c")]
    )
    model: Any = None  # popularity needs no model
    served = align(Artefact("v", data.items, model, data.popularity, now, data.regional), catalog)
    assert served is not None
    ix = catalog.index
    assert served.popularity[ix["a"]] > served.popularity[ix["b"]]  # overall
    assert served.regional["FR"][ix["b"]] > served.regional["FR"][ix["a"]]  # in France
    # one British viewer does not outweigh everyone's taste
    assert served.regional["GB"][ix["a"]] > served.regional["GB"][ix["c"]]
