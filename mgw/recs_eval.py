"""`mgw eval recs`: offline quality of each recommender model, the tuned blend, popularity
and plain EASE on MovieLens ratings.

Protocol: ratings ≥ 4 are the positives; each user's positives are split 80/20 at random
(``--seed``); every other row of the user (the 80% and all lower ratings) is training
history and is excluded from the ranking, which is over all items. The models see the
training rows weighted as `mgw recs offline` weights them (strong 1, lower ratings 0.5);
"EASE plain" is the textbook baseline, trained on the training positives alone, with λ
picked on the test split from a grid (its best case). The blend's settings come from
``tune`` on the training rows only.
"""

from __future__ import annotations

import csv
import gzip
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from domain.recs.metrics import evaluate, top_k
from domain.recs.models import RecsConfig, fit
from domain.recs.split import relevant_sets, split_users
from domain.recs.tuning import tune
from mgw.recs_offline import LOW_WEIGHT, Interactions, read_interactions

DATA = Path(__file__).parent / "data"
RATINGS = DATA / "movielens-ratings.csv.gz"
TITLES = DATA / "ml-latest-small-overviews.csv.gz"
PEOPLE = DATA / "movielens-people-keywords.csv.gz"
PLAIN_LAMBDAS = (25.0, 50.0, 100.0, 200.0, 400.0, 800.0)
METRICS = ("ndcg@10", "recall@20", "hr@10", "coverage@10")


def item_features(item_ids: list[str]) -> sp.csr_matrix | None:
    """Genres, people and keywords of the MovieLens titles as one-hot rows (None when
    the demo data is absent)."""
    if not TITLES.exists():
        return None
    tags: dict[str, list[str]] = {}
    with gzip.open(TITLES, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            tags[row["movieId"]] = [f"g:{g}" for g in row["genres"].split("|") if g]
    if PEOPLE.exists():
        with gzip.open(PEOPLE, "rt", encoding="utf-8", newline="") as fh:
            for row in csv.DictReader(fh):
                extra = [f"p:{p}" for p in row["people"].split("|") if p]
                extra += [f"k:{k}" for k in row["keywords"].split("|") if k]
                tags.setdefault(row["movieId"], []).extend(extra)
    vocab: dict[str, int] = {}
    rows, cols = [], []
    for r, item in enumerate(item_ids):
        for t in tags.get(item, []):
            rows.append(r)
            cols.append(vocab.setdefault(t, len(vocab)))
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(item_ids), max(len(vocab), 1)))


def _sample(data: Interactions, n: int | None, seed: int) -> Interactions:
    if n is None or n >= len(data.user_ids):
        return data
    chosen = np.sort(np.random.default_rng(seed).choice(len(data.user_ids), n, replace=False))
    keep = np.isin(data.users, chosen)
    remap = np.full(len(data.user_ids), -1, dtype=np.int64)
    remap[chosen] = np.arange(n)
    items_kept = np.unique(data.items[keep])
    item_map = np.full(len(data.item_ids), -1, dtype=np.int64)
    item_map[items_kept] = np.arange(items_kept.size)
    return Interactions(
        [data.user_ids[u] for u in chosen],
        [data.item_ids[i] for i in items_kept],
        remap[data.users[keep]],
        item_map[data.items[keep]],
        data.ratings[keep],
        data.timestamps[keep],
    )


def run_eval_recs(
    ratings: Path = RATINGS,
    *,
    seed: int = 42,
    sample_users: int | None = None,
    do_tune: bool = True,
    content: bool = True,
    low_weight: float = LOW_WEIGHT,
    progress: bool = True,
) -> int:
    data = _sample(read_interactions(ratings), sample_users, seed)
    strong = data.strong()
    positives = data.matrix(np.ones(len(data.users), dtype=np.float32), np.flatnonzero(strong))
    lower = data.matrix(np.ones(len(data.users), dtype=np.float32), np.flatnonzero(~strong))
    train_pos, test = split_users(positives, 0.2, seed)
    history = sp.csr_matrix(train_pos + lower)
    weighted = sp.csr_matrix(train_pos + np.float32(low_weight) * lower)
    relevant = relevant_sets(test)
    n_items = positives.shape[1]
    features = item_features(data.item_ids) if content else None

    tags: dict[str, str] = {}

    def measure(model_input: sp.csr_matrix, config: RecsConfig) -> dict[str, float]:
        started = time.perf_counter()
        rec = fit(model_input, config, features)
        tags["last"] = rec.version_tag
        fit_s = time.perf_counter() - started
        ranked = top_k(rec.score(model_input), 20, history)
        return {**evaluate(ranked, relevant, n_items), "fit_s": fit_s}

    bar = tqdm(desc="eval recs", unit="step", disable=not progress, total=None)
    started = time.perf_counter()
    config = RecsConfig()
    if do_tune:
        config = tune(
            weighted,
            item_features=features,
            relevant_min=1.0,
            seed=seed,
            progress=lambda msg: (bar.set_postfix_str(f"tune: {msg}"), bar.update(1)),
        )
    tune_s = time.perf_counter() - started
    results: dict[str, dict[str, float]] = {}
    singles = ["pop", "ease", "rp3b", "knn"] + (["content"] if features is not None else [])
    for name in singles:
        bar.set_postfix_str(name)
        results[name] = measure(weighted, config.only(name))
        bar.update(1)
    bar.set_postfix_str("blend")
    results["blend"] = measure(weighted, config)
    blend_tag = tags["last"]
    bar.update(1)
    best: tuple[float, dict[str, float]] | None = None
    for lam in PLAIN_LAMBDAS:
        bar.set_postfix_str(f"EASE plain λ={lam:g}")
        m = measure(train_pos, replace(config, ease_lambda=lam, max_items=10**9).only("ease"))
        if best is None or m["ndcg@10"] > best[1]["ndcg@10"]:
            best = (lam, m)
        bar.update(1)
    bar.close()
    assert best is not None
    results["ease_plain"] = best[1]
    summary: dict[str, Any] = {
        "ratings": str(ratings),
        "users": positives.shape[0],
        "items": n_items,
        "train_interactions": int(weighted.nnz),
        "test_interactions": int(test.nnz),
        "seed": seed,
        "blend": blend_tag,
        "config": json.loads(config.to_json()),
        "ease_plain_lambda": best[0],
        "tune_s": round(tune_s, 2),
        "models": {k: {m: round(v, 4) for m, v in r.items()} for k, r in results.items()},
    }
    _print_table(results, best[0])
    print(json.dumps(summary))
    return 0


def _print_table(results: dict[str, dict[str, float]], plain_lambda: float) -> None:
    head = f"{'model':<22}" + "".join(f"{m:>13}" for m in (*METRICS, "fit s"))
    print(head)
    print("-" * len(head))
    for name, r in results.items():
        label = f"{name} (λ={plain_lambda:g})" if name == "ease_plain" else name
        cells = "".join(f"{r[m]:>13.4f}" for m in METRICS)
        print(f"{label:<22}{cells}{r['fit_s']:>13.2f}")
