"""Putting the models' scores on one scale (diversity is domain/recs/serving.mmr).

EASE scores, walk probabilities and cosines live on unrelated scales that also differ per
user (a user with 500 items gets larger EASE sums than one with 5). Dividing each model's
row by that user's largest absolute score maps every model to [-1, 1] per user, so a
weight means the same thing for every user; ranks would throw away how far ahead the
leader is, which is what separates a confident model from an unsure one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from domain.recs._sparse import F32


def normalize_rows(scores: F32) -> F32:
    """Each row divided by its largest absolute value (all-zero rows stay zero)."""
    if scores.shape[1] == 0:
        return scores
    peak = np.abs(scores).max(axis=1, keepdims=True)
    out: F32 = np.divide(scores, peak, out=np.zeros_like(scores), where=peak > 0)
    return out


def blend(parts: Sequence[tuple[float, F32]]) -> F32:
    """The weighted sum of per-user normalised score matrices (all the same shape)."""
    out: F32 | None = None
    for weight, scores in parts:
        if weight == 0.0:
            continue
        term = np.float32(weight) * normalize_rows(scores)
        out = term if out is None else out + term
    if out is None:
        raise ValueError("blend: no part with a non-zero weight")
    return out.astype(np.float32, copy=False)
