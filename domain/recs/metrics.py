"""Offline ranking metrics over full rankings (every item is a candidate, the user's
training items removed), binary relevance.

- NDCG@k: DCG of the hits over the ideal DCG of min(|relevant|, k) hits.
- Recall@k: hits / min(|relevant|, k), as in Liang et al. (VAE-CF, 2018) and the EASE
  paper, so a user with 50 held-out items is not capped at k/50.
- HR@k: share of users with at least one hit in the top k.
- Coverage@k: distinct items in all users' top-k lists / all items.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from domain.recs._sparse import F32


def top_k(scores: F32, k: int, exclude: sp.csr_matrix | None = None) -> NDArray[np.int64]:
    """Each row's ``k`` best item indices, best first; ``exclude``'s non-zeros are skipped."""
    s = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None:
        e = sp.coo_matrix(exclude)
        s[e.row, e.col] = -np.inf
    k = min(k, s.shape[1])
    idx = np.argpartition(-s, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(s, idx, axis=1), axis=1, kind="stable")
    return np.take_along_axis(idx, order, axis=1).astype(np.int64)


def ndcg_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    if not relevant:
        return 0.0
    dcg = sum(1.0 / np.log2(i + 2) for i, item in enumerate(ranked[:k]) if item in relevant)
    ideal = sum(1.0 / np.log2(i + 2) for i in range(min(len(relevant), k)))
    return float(dcg / ideal)


def recall_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    if not relevant:
        return 0.0
    hits = sum(1 for item in ranked[:k] if item in relevant)
    return hits / min(len(relevant), k)


def hit_at_k(ranked: Sequence[int], relevant: set[int], k: int) -> float:
    return 1.0 if any(item in relevant for item in ranked[:k]) else 0.0


def coverage(top_lists: Sequence[Sequence[int]], n_items: int) -> float:
    if n_items == 0:
        return 0.0
    return len({i for lst in top_lists for i in lst}) / n_items


def evaluate(
    ranked: NDArray[np.int64], relevant: Sequence[set[int]], n_items: int
) -> dict[str, float]:
    """NDCG@10, Recall@20, HR@10 (means over users with held-out items) and coverage@10
    (over all ranked users); ``ranked`` holds at least 20 items per user."""
    lists = [[int(i) for i in row] for row in ranked]
    users = [u for u, rel in enumerate(relevant) if rel]
    n = max(len(users), 1)
    return {
        "ndcg@10": sum(ndcg_at_k(lists[u], relevant[u], 10) for u in users) / n,
        "recall@20": sum(recall_at_k(lists[u], relevant[u], 20) for u in users) / n,
        "hr@10": sum(hit_at_k(lists[u], relevant[u], 10) for u in users) / n,
        "coverage@10": coverage([lst[:10] for lst in lists], n_items),
    }
