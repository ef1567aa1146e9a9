"""Popularity: how much positive weight each item has. The baseline every model must beat,
the answer for a user with no history, and the tie-breaker for items the item-item models
leave out. Recency is not handled here: the caller's weights already decay with age, so
the column sums are a decayed popularity."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from domain.recs._sparse import F32


def fit_popularity(x: sp.csr_matrix) -> F32:
    """Per-item popularity in [0, 1] (log-damped so the head does not swamp the blend)."""
    pos = x.maximum(0) if x.nnz else x
    counts = np.asarray(pos.sum(axis=0)).ravel().astype(np.float32)
    pop = np.log1p(counts)
    top = float(pop.max()) if pop.size else 0.0
    return (pop / top if top > 0 else pop).astype(np.float32)
