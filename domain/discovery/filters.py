"""Search filters: what a query may restrict, validated against the catalog's vocabulary.

Every filter is applied inside each retriever (the SQL ``WHERE`` of full-text and trigram
retrieval, the vector search's filter), never to the fused list afterwards, so a narrow
filter still fills a page.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from domain.catalog import OFFER_TYPES, PLATFORMS
from domain.identity.ratings import (
    RATINGS,
    TOP_LEVEL,
    UNRATED_POLICIES,
    level,
    normalize_rating,
    ratings_at_or_below,
)

KINDS = ("movie", "series")
MIN_YEAR, MAX_YEAR = 1870, 2100


class FilterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class SearchFilters:
    kinds: tuple[str, ...] = ()
    genres: tuple[str, ...] = ()  # all of them
    year_from: int | None = None
    year_to: int | None = None
    platforms: tuple[str, ...] = ()  # any of them
    region: str | None = None
    offer_types: tuple[str, ...] = ()  # any of them
    max_rating: str | None = None
    people: tuple[str, ...] = ()  # all of them
    #: how a title without a rating fares under ``max_rating`` (domain/identity/ratings.py):
    #: None or "strictest" -- hidden unless the limit is the top of the ladder; "allowed"
    unrated_as: str | None = None

    def merged(self, other: SearchFilters) -> SearchFilters:
        """These filters, with ``other``'s filled in where these say nothing."""
        changes: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if not mine and mine != 0 and theirs:
                changes[f.name] = theirs
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()
            if v not in (None, ())
        }

    @property
    def empty(self) -> bool:
        return not self.as_dict()


def allowed_ratings(max_rating: str) -> list[str]:
    """Every rating at or below ``max_rating``, in both systems (MPAA and TV share one
    ladder: domain/identity/ratings.py), sorted."""
    return sorted(ratings_at_or_below(max_rating))


def unrated_admitted(max_rating: str, unrated_as: str | None) -> bool:
    """Does a limit of ``max_rating`` show titles without a rating? "allowed": always;
    "strictest" (the default): only when the limit is the top of the ladder (NC-17),
    where an unrated title is placed."""
    policy = unrated_as or "strictest"
    if policy not in UNRATED_POLICIES:
        raise ValueError(f"unrated_as must be one of {', '.join(UNRATED_POLICIES)}")
    return policy == "allowed" or level(max_rating) == TOP_LEVEL


def stricter(a: str | None, b: str | None) -> str | None:
    """The lower of two limits (None: no limit); either spelling, canonical out."""
    a, b = normalize_rating(a), normalize_rating(b)
    if a is None or b is None:
        return a or b
    return a if level(a) <= level(b) else b


def _one_of(field: str, values: Iterable[str], known: Collection[str]) -> tuple[str, ...]:
    out: list[str] = []
    lowered = {k.lower(): k for k in known}
    bad = []
    for v in values:
        k = lowered.get(v.strip().lower())
        if k is None:
            bad.append(v)
        elif k not in out:
            out.append(k)
    if bad:
        raise FilterError(
            field,
            f"unknown {field} {', '.join(repr(b) for b in bad)}; known: {', '.join(sorted(known))}",
        )
    return tuple(out)


def _year(field: str, raw: str | None) -> int | None:
    if raw is None or raw == "":
        return None
    try:
        year = int(raw)
    except ValueError:
        raise FilterError(field, f"{field} must be a year like 1994") from None
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise FilterError(field, f"{field} must be between {MIN_YEAR} and {MAX_YEAR}")
    return year


def parse_filters(params: Mapping[str, list[str]], *, genres: Collection[str]) -> SearchFilters:
    """Filters from query parameters (each may repeat or hold a comma-separated list)."""

    def many(name: str) -> list[str]:
        return [v for raw in params.get(name, []) for v in raw.split(",") if v.strip()]

    def one(name: str) -> str | None:
        values = params.get(name, [])
        if len(values) > 1:
            raise FilterError(name, f"give {name} once")
        return values[0].strip() if values and values[0].strip() else None

    region = one("region")
    if region is not None:
        if len(region) != 2 or not region.isalpha():
            raise FilterError("region", "region must be a two-letter country code like US")
        region = region.upper()
    max_rating = one("max_rating")
    if max_rating is not None:
        canonical = normalize_rating(max_rating)
        if canonical is None:
            raise FilterError(
                "max_rating",
                f"unknown max_rating {max_rating!r}; known: {', '.join(RATINGS)}",
            )
        max_rating = canonical
    year_from, year_to = _year("year_from", one("year_from")), _year("year_to", one("year_to"))
    if year_from is not None and year_to is not None and year_from > year_to:
        raise FilterError("year_from", "year_from must not be after year_to")
    return SearchFilters(
        kinds=_one_of("kind", many("kind"), KINDS),
        genres=_one_of("genre", many("genre"), genres),
        year_from=year_from,
        year_to=year_to,
        platforms=_one_of("platform", many("platform"), PLATFORMS),
        region=region,
        offer_types=_one_of("offer", many("offer"), OFFER_TYPES),
        max_rating=max_rating,
    )
