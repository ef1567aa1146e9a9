"""Ranking metrics and the labelled query sets search is measured on, without I/O.

Three sets: MovieLens tags as queries (the movies users gave the tag are the relevant set:
"dark comedy", "time travel", "based on a book"); known-item queries written from titles
the way people mistype them (a typo, a partial title, lower case without punctuation),
each with one relevant title; and descriptions written by hand the way people describe a
film whose title they cannot recall (mgw/data/search-descriptive.jsonl).
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True, slots=True)
class LabelledQuery:
    query: str
    relevant: frozenset[str]
    set_name: str


def ndcg_at(ranked: Sequence[str], relevant: frozenset[str], k: int = 10) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, r in enumerate(ranked[:k]) if r in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
    return dcg / ideal if ideal else 0.0


def recall_at(ranked: Sequence[str], relevant: frozenset[str], k: int = 10) -> float:
    if not relevant:
        return 0.0
    return len(set(ranked[:k]) & relevant) / min(k, len(relevant))


def reciprocal_rank(ranked: Sequence[str], relevant: frozenset[str], k: int = 100) -> float:
    for i, r in enumerate(ranked[:k]):
        if r in relevant:
            return 1 / (i + 1)
    return 0.0


def summarize(
    results: Iterable[tuple[LabelledQuery, Sequence[str]]], k: int = 10
) -> dict[str, float]:
    n = hits = 0
    nd = rc = rr = 0.0
    for q, ranked in results:
        n += 1
        hits += any(r in q.relevant for r in ranked[:k])
        nd += ndcg_at(ranked, q.relevant, k)
        rc += recall_at(ranked, q.relevant, k)
        rr += reciprocal_rank(ranked, q.relevant)
    if not n:
        return {"queries": 0, "success@10": 0.0, "ndcg@10": 0.0, "recall@10": 0.0, "mrr": 0.0}
    return {
        "queries": n,
        "success@10": round(hits / n, 4),
        "ndcg@10": round(nd / n, 4),
        "recall@10": round(rc / n, 4),
        "mrr": round(rr / n, 4),
    }


def tag_queries(
    tags: Iterable[tuple[str, str]],
    known: set[str],
    *,
    min_items: int = 3,
    max_items: int = 60,
    limit: int = 200,
) -> list[LabelledQuery]:
    """(tag, content id) pairs → one query per tag carried by enough known titles; the
    most used tags first, so a limit keeps the ones users agree on."""
    by_tag: dict[str, set[str]] = defaultdict(set)
    for tag, cid in tags:
        t = " ".join(tag.lower().split())
        if cid in known and len(t) >= 3 and _WORD.search(t):
            by_tag[t].add(cid)
    picked = sorted(
        ((t, ids) for t, ids in by_tag.items() if min_items <= len(ids) <= max_items),
        key=lambda x: (-len(x[1]), x[0]),
    )[:limit]
    return [LabelledQuery(t, frozenset(ids), "tags") for t, ids in picked]


def _typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    op = rng.choice(("swap", "drop", "double", "replace"))
    if op == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if op == "drop":
        return word[:i] + word[i + 1 :]
    if op == "double":
        return word[:i] + word[i] + word[i:]
    return word[:i] + rng.choice("aeioustnrl") + word[i + 1 :]


def known_item_queries(
    titles: Mapping[str, str], *, limit: int = 150, seed: int = 11
) -> list[LabelledQuery]:
    """Known-item queries: one per sampled title, cycling typo / partial / plain."""
    rng = random.Random(seed)
    ids = sorted(titles)
    rng.shuffle(ids)
    out: list[LabelledQuery] = []
    for cid in ids:
        if len(out) >= limit:
            break
        title = titles[cid]
        words = _WORD.findall(title)
        if not words:
            continue
        style = len(out) % 3
        long_words = [w for w in words if len(w) >= 5]
        if style == 0 and long_words:
            w = rng.choice(long_words)
            q = " ".join(_typo(x, rng) if x == w else x for x in words).lower()
            kind = "typo"
        elif style == 1 and len(words) >= 3:
            q = " ".join(words[: max(2, len(words) // 2)]).lower()
            kind = "cut_short"
        elif style == 1 and ":" in title:
            q = title.split(":")[0].lower()
            kind = "cut_short"
        else:
            q = " ".join(words).lower()
            kind = "plain"
        out.append(LabelledQuery(q, frozenset({cid}), kind))
    return out


#: the known-item sets, reported apart and together as "known_item"
KNOWN_ITEM_SETS = ("typo", "cut_short", "plain")


def descriptive_queries(
    rows: Iterable[tuple[str, str]], known: set[str], *, limit: int | None = None
) -> list[LabelledQuery]:
    """(description, content id) pairs → one query each, for titles in the catalog."""
    out = [
        LabelledQuery(" ".join(text.split()), frozenset({cid}), "descriptive")
        for text, cid in rows
        if cid in known and text.strip()
    ]
    return out[:limit] if limit is not None else out
