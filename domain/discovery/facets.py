"""Facet counts over a result set: genre, platform, decade, offer type."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from domain.discovery.documents import ANY


@dataclass(frozen=True, slots=True)
class FacetDoc:
    genres: Sequence[str]
    year: int | None
    offer_keys: Sequence[str]


def _ranked(counter: Counter[str]) -> list[dict[str, object]]:
    return [
        {"value": v, "count": n} for v, n in sorted(counter.items(), key=lambda x: (-x[1], x[0]))
    ]


def facet_counts(
    docs: Iterable[FacetDoc], region: str | None
) -> dict[str, list[dict[str, object]]]:
    """How many of ``docs`` fall in each value; platforms and offer types count offers in
    ``region`` when one is given, anywhere otherwise."""
    genres: Counter[str] = Counter()
    platforms: Counter[str] = Counter()
    decades: Counter[str] = Counter()
    offers: Counter[str] = Counter()
    r = region or ANY
    for d in docs:
        genres.update(set(d.genres))
        if d.year is not None:
            decades[f"{d.year // 10 * 10}s"] += 1
        seen_p: set[str] = set()
        seen_o: set[str] = set()
        for key in d.offer_keys:
            kr, kp, kt = key.split("|")
            if kr != r:
                continue
            if kt == ANY and kp != ANY:
                seen_p.add(kp)
            elif kp == ANY and kt != ANY:
                seen_o.add(kt)
        platforms.update(seen_p)
        offers.update(seen_o)
    return {
        "genre": _ranked(genres),
        "platform": _ranked(platforms),
        "decade": sorted(_ranked(decades), key=lambda x: str(x["value"])),
        "offer_type": _ranked(offers),
    }
