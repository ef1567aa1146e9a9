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

KINDS = ("movie", "series")

#: parental ratings from youngest to oldest audience, one ladder per system
RATING_LADDERS: tuple[tuple[str, ...], ...] = (
    ("G", "PG", "PG-13", "R", "NC-17"),
    ("TV-Y", "TV-Y7", "TV-G", "TV-PG", "TV-14", "TV-MA"),
)
#: where a rating of one ladder sits on the other, for a limit set in either system
_EQUIVALENT = {"G": "TV-G", "PG": "TV-PG", "PG-13": "TV-14", "R": "TV-MA", "NC-17": "TV-MA"}
_EQUIVALENT.update({"TV-Y": "G", "TV-Y7": "G", "TV-G": "G", "TV-PG": "PG", "TV-14": "PG-13"})
_EQUIVALENT["TV-MA"] = "R"
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
    """Every rating at or below ``max_rating``, in both systems."""
    out: list[str] = []
    for rating in (max_rating, _EQUIVALENT[max_rating]):
        for ladder in RATING_LADDERS:
            if rating in ladder:
                out.extend(ladder[: ladder.index(rating) + 1])
    return sorted(set(out))


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
        known = [r for ladder in RATING_LADDERS for r in ladder]
        max_rating = _one_of("max_rating", [max_rating], known)[0]
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
