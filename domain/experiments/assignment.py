"""Deterministic assignment: GrowthBook's hashing v2 onto cumulative variant weights.

``bucket(seed, user_id) = fnv1a32(str(fnv1a32(seed + user_id))) % 10000 / 10000``, a
number in [0, 1) with four decimals. The variants' weights, normalised to sum to 1, cut
[0, 1) into consecutive ranges in the order the variants are listed; the user gets the
variant whose range holds the bucket. The same (seed, user) always lands in the same
place, in this process, after a restart, and in any GrowthBook SDK given the same seed
and ranges, so nothing needs remembering to keep an assignment sticky.

Hashing the hash (v2) decorrelates experiments whose seeds share a prefix: with one FNV
pass, seeds "exp1" and "exp2" would put a user in strongly correlated buckets.
"""

from __future__ import annotations

from collections.abc import Sequence

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
#: buckets have four decimals: 10,000 slots
BUCKETS = 10_000


def fnv1a32(text: str) -> int:
    """32-bit FNV-1a over the text's code points (GrowthBook hashes UTF-16 code units,
    which are the same for every character below U+10000)."""
    h = _FNV32_OFFSET
    for ch in text:
        h ^= ord(ch)
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def bucket(seed: str, user_id: str) -> float:
    """Where ``user_id`` falls in [0, 1) for ``seed`` (GrowthBook hash version 2)."""
    return (fnv1a32(str(fnv1a32(seed + user_id))) % BUCKETS) / BUCKETS


def ranges(weights: Sequence[float]) -> list[tuple[float, float]]:
    """Consecutive [start, end) ranges covering [0, 1), one per weight, in order.

    Computed in whole buckets (the weights' shares of 10,000, the last range taking what
    rounding leaves) so the cut points are exact and the ranges tile [0, 1) with no gap."""
    if len(weights) < 1 or any(w <= 0 for w in weights):
        raise ValueError("weights must be positive")
    total = float(sum(weights))
    out: list[tuple[float, float]] = []
    acc = 0.0
    start = 0
    for i, w in enumerate(weights):
        acc += w
        end = BUCKETS if i == len(weights) - 1 else round(acc / total * BUCKETS)
        out.append((start / BUCKETS, end / BUCKETS))
        start = end
    return out


def choose(n: float, cuts: Sequence[tuple[float, float]]) -> int:
    """The index of the range holding ``n`` (GrowthBook's chooseVariation); -1 when none
    does (never, for ranges from ``ranges``)."""
    for i, (lo, hi) in enumerate(cuts):
        if lo <= n < hi:
            return i
    return -1


def variant_index(seed: str, user_id: str, weights: Sequence[float]) -> int:
    """The variant ``user_id`` gets: an index into ``weights``."""
    return choose(bucket(seed, user_id), ranges(weights))
