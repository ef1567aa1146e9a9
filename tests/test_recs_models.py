"""The recommender's models on small matrices whose right answer is known by construction:
two taste clusters (items 0-9 and 10-19) and users who stay inside one of them."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from domain.recs.blend import normalize_rows
from domain.recs.metrics import coverage, evaluate, hit_at_k, ndcg_at_k, recall_at_k, top_k
from domain.recs.models import Recommender, RecsConfig, fit
from domain.recs.split import split_users
from domain.recs.tuning import tune

N_ITEMS = 24  # 0-9 cluster A, 10-19 cluster B, 20-23 never touched


def _clusters(n_users: int = 60, seed: int = 3) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    rows, cols = [], []
    for u in range(n_users):
        base = 0 if u % 2 == 0 else 10
        # item base+0 is the popular one in each cluster; A has more users' weight overall
        picks = {base} | set(rng.choice(np.arange(base + 1, base + 10), 5, replace=False))
        for i in picks:
            rows.append(u)
            cols.append(int(i))
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(n_users, N_ITEMS))


def _row(weights: dict[int, float]) -> sp.csr_matrix:
    cols = list(weights)
    vals = np.asarray([weights[c] for c in cols], dtype=np.float32)
    return sp.csr_matrix((vals, ([0] * len(cols), cols)), shape=(1, N_ITEMS))


def _features() -> sp.csr_matrix:
    # genre 0 for cluster A and the cold items 20-21, genre 1 for B and 22-23
    genre = [0] * 10 + [1] * 10 + [0, 0, 1, 1]
    return sp.csr_matrix((np.ones(N_ITEMS, np.float32), (range(N_ITEMS), genre)), shape=(24, 2))


@pytest.mark.parametrize("model", ["ease", "rp3b", "knn", "content"])
def test_each_model_ranks_the_users_cluster_first(model: str) -> None:
    rec = fit(_clusters(), RecsConfig(ease_lambda=5.0).only(model), item_features=_features())
    history = {10: 1.0, 12: 1.0, 13: 1.0}
    scores = rec.score(_row(history))[0]
    ranked = [i for i in np.argsort(-scores) if i not in history]
    assert set(ranked[:7]) <= set(range(10, 20)), (model, ranked[:7])


def test_blend_default_config_and_version_tag() -> None:
    rec = fit(_clusters(), RecsConfig(weights={"ease": 1.0, "rp3b": 0.5, "knn": 0.2}))
    assert rec.version_tag == "blend(ease,rp3b,knn)"
    assert rec.n_items == N_ITEMS
    scores = rec.score(_row({1: 1.0, 2: 1.0}))
    assert scores.shape == (1, N_ITEMS) and scores.dtype == np.float32
    ranked = [i for i in np.argsort(-scores[0]) if i not in (1, 2)]
    assert set(ranked[:8]) <= set(range(10))


@pytest.mark.parametrize("model", ["ease", "rp3b", "knn"])
def test_a_negative_pushes_its_neighbours_down(model: str) -> None:
    x = _clusters()
    rec = fit(x, RecsConfig(ease_lambda=5.0).only(model))
    liked = {1: 1.0, 11: 1.0}
    plain = rec.score(_row(liked))[0]
    disliked = rec.score(_row({**liked, 12: -2.0}))[0]
    b = list(range(13, 20))
    a = list(range(2, 10))
    assert disliked[b].mean() < plain[b].mean()
    # the dislike tips the balance: cluster A now leads
    assert disliked[a].mean() > disliked[b].mean()


def test_negative_values_in_training_do_not_break_fit() -> None:
    x = _clusters().tolil()
    x[0, 15] = -3.0
    rec = fit(sp.csr_matrix(x), RecsConfig(weights={"ease": 1.0, "rp3b": 0.5, "knn": 0.5}))
    assert np.isfinite(rec.score(sp.csr_matrix(x))).all()


def test_fold_in_scores_a_user_not_in_training_and_cold_users_get_popularity() -> None:
    x = _clusters()
    rec = fit(x, RecsConfig(ease_lambda=5.0))
    new_user = rec.score(_row({3: 1.0, 4: 1.0, 5: 1.0}))[0]
    assert int(np.argmax(np.where(np.isin(np.arange(N_ITEMS), [3, 4, 5]), -np.inf, new_user))) < 10
    cold = rec.score(sp.csr_matrix((1, N_ITEMS), dtype=np.float32))[0]
    popular = np.asarray(x.sum(axis=0)).ravel()
    assert popular[int(np.argmax(cold))] == popular.max()
    assert cold[20:].max() == 0.0  # never-seen items have no popularity


def test_items_outside_the_dense_cap_are_scored_by_content_and_popularity() -> None:
    x = _clusters()
    config = RecsConfig(
        weights={"ease": 1.0, "content": 0.5, "pop": 0.1}, ease_lambda=5.0, max_items=10
    )
    rec = fit(x, config, item_features=_features())
    assert rec.dense_items.size == 10
    scores = rec.score(_row({0: 1.0, 2: 1.0}))[0]
    # cold items 20-21 share cluster A's genre: content places them above B's cold 22-23
    assert scores[20] > scores[22] and scores[21] > scores[23]


@pytest.mark.parametrize(
    "weights", [{"ease": 1.0}, {"ease": 1.0, "rp3b": 0.5, "knn": 0.2}, {"knn": 1.0}]
)
def test_explain_names_the_history_item_behind_a_recommendation(
    weights: dict[str, float],
) -> None:
    rec = fit(_clusters(), RecsConfig(weights=weights, ease_lambda=5.0))
    u = _row({2: 1.0, 14: 1.0})
    scores = rec.score(u)[0]
    scores[[2, 14]] = -np.inf
    top = [int(i) for i in np.argsort(-scores)[:4]]
    reasons = rec.explain(u, [*top, 20])
    for item, reason in zip(top, reasons, strict=False):
        assert reason in (2, 14)
        assert (reason < 10) == (item < 10), (item, reason)  # the same cluster's history item
    assert reasons[-1] is None  # nothing in the history leads to an untouched item


def test_similar_excludes_the_item_and_stays_in_its_cluster() -> None:
    rec = fit(_clusters(), RecsConfig(ease_lambda=5.0))
    sims = rec.similar(12, 5)
    assert len(sims) == 5 and all(i != 12 for i, _ in sims)
    assert all(10 <= i < 20 for i, _ in sims)
    assert [s for _, s in sims] == sorted((s for _, s in sims), reverse=True)


def test_bytes_round_trip_gives_identical_scores() -> None:
    x = _clusters()
    config = RecsConfig(weights={"ease": 1.0, "rp3b": 0.3, "knn": 0.2, "content": 0.1})
    rec = fit(x, config, item_features=_features())
    again = Recommender.from_bytes(rec.to_bytes())
    assert again.version_tag == rec.version_tag and again.config == rec.config
    np.testing.assert_array_equal(again.score(x), rec.score(x))
    assert again.similar(3, 4) == rec.similar(3, 4)


def test_tune_returns_a_config_that_fits() -> None:
    x = _clusters(120)
    config = tune(x, seed=1)
    assert config.ease_lambda is not None and config.ease_lambda > 0
    assert fit(x, config).score(x).shape == (120, N_ITEMS)


def test_split_holds_out_a_fifth_of_each_users_positives() -> None:
    x = _clusters()
    train, test = split_users(x, 0.2, seed=5)
    assert train.nnz + test.nnz == x.nnz
    assert train.multiply(test).nnz == 0
    per_user = np.diff(test.indptr)
    assert set(per_user.tolist()) == {1}  # six positives each → round(1.2) = 1


def test_metrics_on_hand_computed_cases() -> None:
    ranked = [5, 1, 7, 2]
    relevant = {1, 2, 9}
    # hits at ranks 2 and 4: (1/log2(3) + 1/log2(5)) / (1 + 1/log2(3) + 1/2)
    expected = (1 / np.log2(3) + 1 / np.log2(5)) / (1 + 1 / np.log2(3) + 0.5)
    assert ndcg_at_k(ranked, relevant, 10) == pytest.approx(expected)
    assert ndcg_at_k(ranked, relevant, 1) == 0.0
    assert recall_at_k(ranked, relevant, 2) == pytest.approx(0.5)  # 1 hit / min(3, 2)
    assert recall_at_k(ranked, relevant, 20) == pytest.approx(2 / 3)
    assert hit_at_k(ranked, relevant, 1) == 0.0 and hit_at_k(ranked, relevant, 2) == 1.0
    assert coverage([[1, 2], [2, 3]], 10) == pytest.approx(0.3)


def test_top_k_excludes_and_evaluate_averages_over_users_with_targets() -> None:
    scores = np.asarray([[0.9, 0.8, 0.1, 0.5], [0.1, 0.2, 0.3, 0.4]], dtype=np.float32)
    exclude = sp.csr_matrix(np.asarray([[1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    ranked = top_k(scores, 3, exclude)
    assert ranked.tolist() == [[1, 3, 2], [3, 2, 1]]
    m = evaluate(top_k(scores, 20, exclude), [{1}, set()], 4)
    assert m["ndcg@10"] == pytest.approx(1.0) and m["hr@10"] == 1.0


def test_normalize_rows() -> None:
    s = np.asarray([[2.0, -4.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(normalize_rows(s), [[0.5, -1.0, 0.25], [0, 0, 0]])
