"""Per-user random hold-out: the split behind both the offline evaluation and ``tune``'s
inner validation (which splits the training part again, so nothing is tuned on the
reported test items)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def split_users(
    x: sp.csr_matrix,
    test_fraction: float = 0.2,
    seed: int = 42,
    min_items: int = 2,
    relevant_min: float = 0.0,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, test) with the same shape as ``x``: each user with at least ``min_items``
    entries above ``relevant_min`` (and positive) moves round(test_fraction · n) of them
    (at least one) to test. Other entries stay in train: weak or negative signals are
    history, never something to predict."""
    x = sp.csr_matrix(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    test_mask = np.zeros(x.nnz, dtype=bool)
    for u in range(x.shape[0]):
        lo, hi = x.indptr[u], x.indptr[u + 1]
        row = x.data[lo:hi]
        pos = lo + np.flatnonzero((row > 0) & (row >= relevant_min))
        if pos.size < min_items:
            continue
        n_test = max(1, int(round(test_fraction * pos.size)))
        test_mask[rng.choice(pos, size=n_test, replace=False)] = True
    coo = x.tocoo()
    shape = x.shape

    def part(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((coo.data[mask], (coo.row[mask], coo.col[mask])), shape=shape)

    return part(~test_mask), part(test_mask)


def relevant_sets(test: sp.csr_matrix) -> list[set[int]]:
    """Each user's held-out items."""
    t = sp.csr_matrix(test)
    return [set(t.indices[t.indptr[u] : t.indptr[u + 1]].tolist()) for u in range(t.shape[0])]
