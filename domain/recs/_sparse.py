"""Helpers the item-item models share: the dense-to-sparse top-k cut and row scaling."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

F32 = NDArray[np.float32]


def top_k_rows(w: F32, k: int, *, block: int = 2048) -> sp.csr_matrix:
    """The ``k`` largest positive entries of each row of ``w`` as a csr matrix.

    The dense item-item matrices are cut to their neighbourhoods: scoring a user is then a
    sparse product, and the stored model is ``k`` entries per item instead of ``d``.
    Done in row blocks so the argpartition's index array stays small.
    """
    d, n = w.shape
    k = min(k, n)
    if k <= 0 or d == 0:
        return sp.csr_matrix((d, n), dtype=np.float32)
    rows, cols, vals = [], [], []
    for start in range(0, d, block):
        chunk = w[start : start + block]
        idx = np.argpartition(-chunk, k - 1, axis=1)[:, :k]
        v = np.take_along_axis(chunk, idx, axis=1)
        keep = v > 0
        r = np.broadcast_to(np.arange(start, start + len(chunk))[:, None], idx.shape)
        rows.append(r[keep])
        cols.append(idx[keep])
        vals.append(v[keep])
    return sp.csr_matrix(
        (np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
        shape=(d, n),
    )


def row_normalize(x: sp.csr_matrix) -> sp.csr_matrix:
    """Rows scaled to sum to one (empty rows stay empty)."""
    sums = np.asarray(x.sum(axis=1)).ravel()
    inv = np.divide(1.0, sums, out=np.zeros_like(sums), where=sums > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ x)
