"""Catalog moderation: what puts a title in the queue and what a decision does. No I/O.

A title enters the queue two ways:
- **quality rules** flag its metadata (``flags``): no overview, sources that disagree on the
  year by more than one, or a merge that joined titles whose names barely match (entity
  resolution's likeliest mistake);
- **a user reports it** (``POST /v1/content/{id}/reports``, one of ``REASONS``).

It stays open until an admin decides (``ACTIONS``). A report after the decision opens it
again; a flag does not (the admin has seen it), so an approved title without an overview
does not come back every time a platform touches it.
Hiding removes a title from search and recommendations until it is unhidden; editing
writes the canonical fields as an editorial record, which precedes every platform's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from rapidfuzz import fuzz

from domain.discovery.documents import fold

REASONS = ("wrong_metadata", "wrong_availability", "duplicate", "inappropriate", "other")
ACTIONS = ("approve", "edit", "hide", "unhide")
#: the canonical fields an edit may set (ContentUpserted's, as an editorial source)
EDITABLE = ("title", "original_title", "year", "runtime_min", "genres", "overview", "rating")
MAX_NOTE = 1000
#: names of two merged records at or above this token-set similarity (0..100) look alike
MERGE_SIMILARITY = 60.0
#: sources may differ by a year (festival premiere vs release); more is a conflict
YEAR_SPREAD = 1


@dataclass(frozen=True, slots=True)
class Flag:
    rule: str
    detail: str


@dataclass(frozen=True, slots=True)
class TitleFacts:
    """What the rules read about one title."""

    title: str
    overview: str | None
    source_years: Sequence[int]
    merged_titles: Sequence[str]


def flags(t: TitleFacts) -> list[Flag]:
    out: list[Flag] = []
    if not (t.overview or "").strip():
        out.append(Flag("missing_overview", "no source gives an overview"))
    years = sorted(set(t.source_years))
    if years and years[-1] - years[0] > YEAR_SPREAD:
        out.append(Flag("conflicting_years", f"sources give {', '.join(map(str, years))}"))
    odd = [m for m in t.merged_titles if not looks_alike(t.title, m)]
    if odd:
        out.append(Flag("suspicious_merge", f"merged with {', '.join(sorted(set(odd))[:5])}"))
    return out


def looks_alike(a: str, b: str) -> bool:
    return fuzz.token_set_ratio(fold(a), fold(b)) >= MERGE_SIMILARITY


def hidden_after(hidden: bool, action: str) -> bool:
    if action == "hide":
        return True
    if action == "unhide":
        return False
    return hidden


def is_open(
    *,
    flagged: bool,
    reports_at: Iterable[datetime],
    decided_at: datetime | None,
) -> bool:
    """Whether a title waits for an admin: something raised it (a flag, a report) and no
    decision came after the last thing that did."""
    reports = list(reports_at)
    if not flagged and not reports:
        return False
    if decided_at is None:
        return True
    return any(r > decided_at for r in reports)
