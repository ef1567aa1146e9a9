"""Content similarity: cosine between items' feature rows (genres, people, keywords),
idf-weighted so a shared director counts for more than a shared "Drama". It is the only
model that can place an item nobody has interacted with yet, so it covers every item,
not just the dense subset."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from domain.recs._sparse import top_k_rows


def fit_content(features: sp.csr_matrix, top_k: int, *, block: int = 2048) -> sp.csr_matrix:
    """Item-item cosine neighbours (items×items csr, top ``top_k`` per row)."""
    f = sp.csr_matrix(features, dtype=np.float32)
    f.data = np.abs(f.data)
    n = f.shape[0]
    df = np.asarray((f > 0).sum(axis=0)).ravel().astype(np.float32)
    idf = np.log((1.0 + n) / (1.0 + df)) + 1.0
    f = sp.csr_matrix(f @ sp.diags(idf.astype(np.float32)))
    norms = np.sqrt(np.asarray(f.multiply(f).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    f = sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ f)
    ft = sp.csr_matrix(f.T)
    parts = []
    for start in range(0, n, block):
        sim = (f[start : start + block] @ ft).toarray().astype(np.float32, copy=False)
        rows = np.arange(start, start + sim.shape[0])
        sim[rows - start, rows] = 0.0
        parts.append(top_k_rows(sim, top_k))
    if not parts:
        return sp.csr_matrix((n, n), dtype=np.float32)
    return sp.csr_matrix(sp.vstack(parts), dtype=np.float32)
