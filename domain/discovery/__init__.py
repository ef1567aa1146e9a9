"""Discovery logic without I/O. For now: the placeholder title embedding.

Until a real sentence-embedding model lands (the search issue), titles get a
deterministic feature-hashing vector: word and character-trigram features of
the title, genres and overview hashed into ``DIMS`` signed buckets and
L2-normalised. Similar wording lands near each other; the same text always
gives the same vector.
"""

from __future__ import annotations

import hashlib
import math
import re

DIMS = 64
_WORD = re.compile(r"[\w']+", re.UNICODE)


def _bucket(feature: str) -> tuple[int, float]:
    h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
    return h % DIMS, (1.0 if (h >> 32) & 1 else -1.0)


def placeholder_embedding(
    title: str, genres: list[str] | None = None, overview: str | None = None
) -> list[float]:
    vec = [0.0] * DIMS
    weighted = ((title, 3.0), (" ".join(genres or ()), 2.0), (overview or "", 1.0))
    for text, weight in weighted:
        words = _WORD.findall(text.lower())
        for w in words:
            i, sign = _bucket("w:" + w)
            vec[i] += sign * weight
        for w in words[:64] if weight > 1 else ():
            padded = f" {w} "
            for j in range(len(padded) - 2):
                i, sign = _bucket("t:" + padded[j : j + 3])
                vec[i] += sign * weight * 0.5
    norm = math.sqrt(sum(v * v for v in vec))
    if norm == 0:
        vec[0] = 1.0
        return vec
    return [v / norm for v in vec]
