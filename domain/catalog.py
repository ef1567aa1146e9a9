"""Catalog rules without I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("movie", "series", "episode")
IMDB_ID = re.compile(r"^tt\d{7,10}$")
TMDB_ID = re.compile(r"^\d{1,10}$")
MIN_YEAR, MAX_YEAR = 1870, 2100


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    message: str


def check_content(c: dict[str, object]) -> Violation | None:
    """Why a ContentUpserted payload cannot be stored, or None."""
    title = c.get("title")
    if not isinstance(title, str) or not title.strip():
        return Violation("title", "must be a non-empty string")
    if c.get("kind") not in KINDS:
        return Violation("kind", f"must be one of {', '.join(KINDS)}")
    year = c.get("year")
    if year is not None and not (isinstance(year, int) and MIN_YEAR <= year <= MAX_YEAR):
        return Violation("year", f"must be between {MIN_YEAR} and {MAX_YEAR}")
    runtime = c.get("runtime_min")
    if runtime is not None and not (isinstance(runtime, int) and 0 < runtime <= 3000):
        return Violation("runtime_min", "must be between 1 and 3000 minutes")
    ext = c.get("external_ids") or {}
    if isinstance(ext, dict):
        imdb, tmdb = ext.get("imdb"), ext.get("tmdb")
        if imdb is not None and not (isinstance(imdb, str) and IMDB_ID.match(imdb)):
            return Violation("external_ids.imdb", "must look like tt0114709")
        if tmdb is not None and not (isinstance(tmdb, str) and TMDB_ID.match(tmdb)):
            return Violation("external_ids.tmdb", "must be a numeric TMDB id")
    if c.get("kind") == "episode":
        if not c.get("series_id"):
            return Violation("series_id", "an episode needs its series_id")
        for f in ("season", "episode"):
            v = c.get(f)
            if v is not None and not (isinstance(v, int) and v >= 0):
                return Violation(f, "must be an integer >= 0")
    return None


def normalize_genres(genres: list[str]) -> list[str]:
    """Trimmed, de-duplicated (case-insensitively), order kept."""
    seen: set[str] = set()
    out: list[str] = []
    for g in genres:
        g = g.strip()
        if g and g.lower() not in seen and g.lower() != "(no genres listed)":
            seen.add(g.lower())
            out.append(g)
    return out
