"""RP3beta: random walks on the user-item graph, popularity discounted (Paudel et al.,
"Updatable, Accurate, Diverse, and Scalable Recommendations for Interactive
Applications", TiiS 2016).

The weight from item i to item j is the probability of a three-step walk i → user → j
with each transition probability raised to ``α``, divided by ``pop(j)^β``. The ``β``
discount is what makes it worth keeping next to EASE: it reaches further into the long
tail, which is where the blend gains its catalog coverage.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from domain.recs._sparse import row_normalize, top_k_rows


def fit_rp3beta(x: sp.csr_matrix, alpha: float, beta: float, top_k: int) -> sp.csr_matrix:
    """Item-item walk weights (d×d csr, top ``top_k`` per row) from non-negative ``x``
    (users × d)."""
    p_ui = row_normalize(x)
    p_iu = row_normalize(sp.csr_matrix(x.T))
    if alpha != 1.0:
        p_ui.data **= alpha
        p_iu.data **= alpha
    w = (p_iu @ p_ui).toarray().astype(np.float32, copy=False)
    pop = np.asarray(x.sum(axis=0)).ravel().astype(np.float32)
    discount = np.divide(1.0, pop**beta, out=np.zeros_like(pop), where=pop > 0)
    w *= discount[None, :]
    np.fill_diagonal(w, 0.0)
    return top_k_rows(w, top_k)
