"""The ways real catalogs disagree about one title, applied per platform record.

Each kind fires independently at a small rate; `NoiseCounter` keeps the counts so the
generator can report (and the tests check) that every kind occurs."""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter

from mgw.feedgen.catalog import Title

# Platforms whose records sometimes carry the original-language title instead of the English
# one: those with large catalogs outside the US.
REGIONAL = frozenset({"netflix", "hbo_max", "disney_plus"})

RATES = {
    "moved_article": 0.07,  # "Matrix, The" as MovieLens lists it
    "original_title": 0.30,  # of non-English titles, on REGIONAL platforms only
    "alias": 0.15,  # of titles with an a.k.a. ("Se7en")
    "subtitle_dropped": 0.10,  # of titles with ":" or " - "
    "upper_case": 0.03,
    "ampersand": 0.30,  # of titles with " & " or " and " (" and " -> " & " at a third of it)
    "apostrophe_dropped": 0.15,  # of titles with an apostrophe
    "extra_space": 0.03,
    "accents_dropped": 0.20,  # of titles with accented letters
    "year_off_by_one": 0.05,
    "year_missing": 0.02,
    "runtime_off": 0.12,  # by 1-4 minutes
}
_SUBTITLE = re.compile(r"\s*(?::|\s-\s)\s*")


class NoiseCounter(Counter[str]):
    pass


def _strip_accents(s: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", s) if not unicodedata.combining(ch))


def vary_title(t: Title, platform: str, rng: random.Random, seen: NoiseCounter) -> tuple[str, str]:
    """(title as this platform shows it, ISO 639-1 of that title)."""
    r = rng.random
    name, lang = t.title, "en"
    if t.listed != t.title and r() < RATES["moved_article"]:
        name = t.listed
        seen["moved_article"] += 1
    elif (
        platform in REGIONAL
        and t.original_title
        and t.original_language not in (None, "en")
        and r() < RATES["original_title"]
    ):
        name, lang = t.original_title, t.original_language or "en"
        seen["original_title"] += 1
    elif t.alias and t.alias_is_aka and r() < RATES["alias"]:
        name = t.alias
        seen["alias"] += 1
    if (":" in name or " - " in name) and r() < RATES["subtitle_dropped"]:
        head = _SUBTITLE.split(name, maxsplit=1)[0]
        if head:
            name = head
            seen["subtitle_dropped"] += 1
    if " & " in name and r() < RATES["ampersand"]:
        name = name.replace(" & ", " and ")
        seen["ampersand"] += 1
    elif " and " in name and r() < RATES["ampersand"] / 3:
        name = name.replace(" and ", " & ")
        seen["ampersand"] += 1
    if "'" in name and r() < RATES["apostrophe_dropped"]:
        name = name.replace("'", "")
        seen["apostrophe_dropped"] += 1
    if not name.isascii() and r() < RATES["accents_dropped"]:
        name = _strip_accents(name)
        seen["accents_dropped"] += 1
    if r() < RATES["upper_case"]:
        name = name.upper()
        seen["upper_case"] += 1
    if " " in name and r() < RATES["extra_space"]:
        name = name.replace(" ", "  ", 1)
        seen["extra_space"] += 1
    return name, lang


def vary_year(year: int | None, rng: random.Random, seen: NoiseCounter) -> int | None:
    if year is None:
        return None
    x = rng.random()
    if x < RATES["year_off_by_one"]:
        seen["year_off_by_one"] += 1
        return year + rng.choice((-1, 1))
    if x < RATES["year_off_by_one"] + RATES["year_missing"]:
        seen["year_missing"] += 1
        return None
    return year


def vary_runtime(runtime: int, rng: random.Random, seen: NoiseCounter) -> int:
    if rng.random() < RATES["runtime_off"]:
        seen["runtime_off"] += 1
        return max(1, runtime + rng.choice((-1, 1)) * rng.randint(1, 4))
    return runtime
