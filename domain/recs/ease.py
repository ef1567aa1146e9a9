"""EASE: the closed-form linear item-item model (Steck, "Embarrassingly Shallow
Autoencoders for Sparse Data", WWW 2019).

``B = I - P / diag(P)`` with ``P = (XᵀX + λI)⁻¹`` and a zero diagonal: each item is
reconstructed from the user's other items. It is usually the strongest single model on
implicit feedback. The cost is one d×d inverse, so only the ``max_items`` most interacted
items enter it (see ``RecsConfig``). The inverse goes through a float32 Cholesky
factorisation: ``XᵀX + λI`` is positive definite, float32 is ample at λ ≥ 1 and halves
both the time and the memory of float64 LU.
"""

from __future__ import annotations

import numpy as np
from scipy.linalg import lapack

from domain.recs._sparse import F32


def default_lambda(gram_diagonal: F32) -> float:
    """λ scaled to the data: a multiple of the mean item weight, so the same setting
    regularises a 600-user and a 100k-user data set alike (the best λ grows with XᵀX)."""
    positive = gram_diagonal[gram_diagonal > 0]
    mean = float(positive.mean()) if positive.size else 1.0
    return max(1.0, 25.0 * mean)


def fit_ease(gram: F32, lambda_: float) -> F32:
    """The d×d weight matrix ``B`` (float32, zero diagonal) from the Gram matrix ``XᵀX``.

    ``gram`` is consumed (overwritten) to keep peak memory at two d×d arrays.
    """
    d = gram.shape[0]
    if d == 0:
        return np.zeros((0, 0), dtype=np.float32)
    a = np.asfortranarray(gram, dtype=np.float32)
    a[np.diag_indices(d)] += np.float32(lambda_)
    chol, info = lapack.spotrf(a, lower=0, overwrite_a=1, clean=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: Cholesky failed (info={info}); raise lambda")
    p, info = lapack.spotri(chol, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: inverse failed (info={info})")
    # spotri fills only the upper triangle
    p = np.triu(p)
    p += np.triu(p, 1).T
    diag = np.diag(p).copy()
    p /= -diag[None, :]
    np.fill_diagonal(p, 0.0)
    return np.ascontiguousarray(p, dtype=np.float32)
