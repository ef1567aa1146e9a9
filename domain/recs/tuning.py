"""Choosing hyperparameters on the training data alone.

``tune`` holds out 20% of each user's strongest entries *from the training matrix it is
given* and picks, by NDCG@10 on that inner validation split: EASE's λ (a few multiples of
the data-scaled default), RP3beta's α and β, kNN's shrinkage, then the blend weights. The
blend is scored from cached per-model scores, so the weight grid costs additions only.
Among settings within ``TIE_BAND`` of the best NDCG the one with the widest catalog
coverage wins: on a validation set this small, a 1% NDCG difference is noise, a wider
catalog is not.

λ found on 80% of the data is scaled by the weight ratio for the full data, since the
Gram matrix λ competes with grows linearly with the data.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from domain.recs._sparse import F32
from domain.recs.ease import default_lambda
from domain.recs.metrics import evaluate, top_k
from domain.recs.models import RecsConfig, fit
from domain.recs.split import relevant_sets, split_users

TIE_BAND = 0.01
LAMBDA_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
RP3_GRID = tuple(itertools.product((0.6, 0.8, 1.0), (0.2, 0.35, 0.5)))
KNN_SHRINK = (10.0, 50.0)
BLEND_RP3 = (0.0, 0.15, 0.3, 0.5)
BLEND_KNN = (0.0, 0.15, 0.3)
BLEND_POP = (0.0, 0.05, 0.1)
BLEND_CONTENT = (0.0, 0.05, 0.15)

Progress = Callable[[str], None]


class _Validation:
    """The inner split and the scoring of candidate settings on it."""

    def __init__(self, x: sp.csr_matrix, relevant_min: float, seed: int, max_users: int) -> None:
        self.train, held = split_users(x, 0.2, seed, relevant_min=relevant_min)
        rel = relevant_sets(held)
        users = np.asarray([u for u, r in enumerate(rel) if r], dtype=np.int64)
        if users.size > max_users:
            users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
        self.users = users
        self.rows = sp.csr_matrix(self.train[users])
        self.relevant = [rel[u] for u in users]
        self.n_items = x.shape[1]

    def metrics(self, scores: F32) -> dict[str, float]:
        return evaluate(top_k(scores, 20, self.rows), self.relevant, self.n_items)


def _better(candidate: dict[str, float], best: dict[str, float] | None) -> bool:
    if best is None:
        return True
    c, b = candidate["ndcg@10"], best["ndcg@10"]
    if c > b * (1 + TIE_BAND):
        return True
    if c >= b * (1 - TIE_BAND):
        return candidate["coverage@10"] > best["coverage@10"] and c >= b * (1 - TIE_BAND / 2)
    return False


def _pick(options: Iterable[tuple[RecsConfig, F32]], val: _Validation) -> tuple[RecsConfig, F32]:
    best: tuple[RecsConfig, F32] | None = None
    best_m: dict[str, float] | None = None
    for config, scores in options:
        m = val.metrics(scores)
        if _better(m, best_m):
            best, best_m = (config, scores), m
    assert best is not None
    return best


def tune(
    x: sp.csr_matrix,
    *,
    base: RecsConfig | None = None,
    item_features: sp.csr_matrix | None = None,
    relevant_min: float | None = None,
    seed: int = 0,
    max_users: int = 3000,
    progress: Progress | None = None,
) -> RecsConfig:
    """A ``RecsConfig`` for ``x`` chosen on an inner validation split of ``x``.

    ``relevant_min``: only entries at least this strong are held out as relevant (default:
    the median positive weight, so weak signals such as impressions are never targets).
    """
    say = progress or (lambda _msg: None)
    base = base or RecsConfig()
    x = sp.csr_matrix(x, dtype=np.float32)
    if relevant_min is None:
        positive = x.data[x.data > 0]
        relevant_min = float(np.median(positive)) if positive.size else 0.0
    val = _Validation(x, relevant_min, seed, max_users)
    if val.users.size == 0:
        return base
    rows = val.rows

    def alone(config: RecsConfig, model: str) -> tuple[RecsConfig, F32]:
        rec = fit(val.train, config.only(model), item_features)
        return config, rec.score(rows, with_popularity=False)

    say("EASE λ")
    pos = val.train.maximum(0)
    lam0 = base.ease_lambda or default_lambda(np.asarray(pos.multiply(pos).sum(axis=0)).ravel())
    cfg, ease = _pick(
        (alone(replace(base, ease_lambda=lam0 * f), "ease") for f in LAMBDA_FACTORS), val
    )
    say("RP3beta α, β")
    cfg, rp3 = _pick(
        (alone(replace(cfg, rp3_alpha=a, rp3_beta=b), "rp3b") for a, b in RP3_GRID), val
    )
    say("kNN shrinkage")
    cfg, knn = _pick((alone(replace(cfg, knn_shrink=s), "knn") for s in KNN_SHRINK), val)
    content: F32 | None = None
    if item_features is not None:
        content = alone(cfg, "content")[1]
    pop = fit(val.train, cfg.only("pop")).popularity[None, :]

    say("blend weights")

    def blends() -> Iterable[tuple[RecsConfig, F32]]:
        contents = BLEND_CONTENT if content is not None else (0.0,)
        for wr, wk, wp, wc in itertools.product(BLEND_RP3, BLEND_KNN, BLEND_POP, contents):
            s = ease + np.float32(wr) * rp3 + np.float32(wk) * knn
            if content is not None and wc:
                s = s + np.float32(wc) * content
            s = s + np.float32(max(wp, 1e-3)) * pop
            weights = {"ease": 1.0, "rp3b": wr, "knn": wk, "pop": wp, "content": wc}
            yield replace(cfg, weights=weights), s

    cfg, _ = _pick(blends(), val)
    # λ was chosen against 80% of the weight: scale it to the full data
    full = float(x.maximum(0).multiply(x.maximum(0)).sum())
    part = float(pos.multiply(pos).sum()) or 1.0
    assert cfg.ease_lambda is not None
    return replace(cfg, ease_lambda=cfg.ease_lambda * full / part)
