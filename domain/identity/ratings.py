"""Parental ratings: the MPAA film scale and the US TV Parental Guidelines on one ladder.

A profile sets one maximum rating, but the catalog mixes films (G ... NC-17) and series
(TV-Y ... TV-MA). Both scales are placed on one ordered ladder of levels, so "at most
PG-13" also admits TV-14 and "at most TV-PG" also admits PG:

    level 0  TV-Y           all children
    level 1  TV-Y7          children 7 and older
    level 2  G, TV-G        general audiences
    level 3  PG, TV-PG      parental guidance suggested
    level 4  PG-13, TV-14   13 / 14 and older
    level 5  R, TV-MA       restricted / mature audiences
    level 6  NC-17          adults only

Content without a (recognisable) rating is the hard case. ``unrated_as="strictest"``
(the default) places it at the top of the ladder, so a limited profile never sees it
unless its limit is NC-17; ``"allowed"`` places it at level 0.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

_LEVELS: Mapping[str, int] = MappingProxyType(
    {
        "TV-Y": 0,
        "TV-Y7": 1,
        "G": 2,
        "TV-G": 2,
        "PG": 3,
        "TV-PG": 3,
        "PG-13": 4,
        "TV-14": 4,
        "R": 5,
        "TV-MA": 5,
        "NC-17": 6,
    }
)
#: every rating, lowest level first
RATINGS: tuple[str, ...] = tuple(_LEVELS)
TOP_LEVEL = max(_LEVELS.values())
UNRATED_POLICIES = ("strictest", "allowed")

# compact spelling (upper case, no spaces, dashes, dots or underscores) -> rating;
# "TV-Y7-FV" (fantasy violence) is TV-Y7 for the ladder
_COMPACT: Mapping[str, str] = MappingProxyType(
    {r.replace("-", ""): r for r in RATINGS} | {"TVY7FV": "TV-Y7"}
)


def normalize_rating(text: str | None) -> str | None:
    """The canonical spelling of a rating ("pg13", "Tv 14" -> "PG-13", "TV-14"), or None."""
    if not text or len(text) > 32:
        return None
    compact = "".join(ch for ch in text.upper() if ch.isalnum())
    return _COMPACT.get(compact)


def level(rating: str) -> int:
    """The ladder level of ``rating`` (any spelling ``normalize_rating`` accepts)."""
    canonical = normalize_rating(rating)
    if canonical is None:
        raise ValueError(f"unknown rating {rating!r}; known ratings: {', '.join(RATINGS)}")
    return _LEVELS[canonical]


def allowed(
    content_rating: str | None, max_rating: str | None, *, unrated_as: str = "strictest"
) -> bool:
    """May a profile limited to ``max_rating`` (None: no limit) see this content?"""
    if unrated_as not in UNRATED_POLICIES:
        raise ValueError(f"unrated_as must be one of {', '.join(UNRATED_POLICIES)}")
    if max_rating is None:
        return True
    limit = level(max_rating)
    canonical = normalize_rating(content_rating)
    if canonical is None:
        content_level = TOP_LEVEL if unrated_as == "strictest" else 0
    else:
        content_level = _LEVELS[canonical]
    return content_level <= limit


def ratings_at_or_below(max_rating: str) -> list[str]:
    """Every rating of both scales a profile limited to ``max_rating`` may see (canonical
    spellings, lowest level first): the list an SQL filter matches normalized ratings in.
    Unrated content is not in it; the caller adds it when its policy admits it."""
    limit = level(max_rating)
    return [r for r in RATINGS if _LEVELS[r] <= limit]
