"""Query planning: from the words typed and the filters asked for to what the retrievers
run. Pure: the intent parser and the speller are in-memory vocabularies built elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from domain.discovery.documents import fold
from domain.discovery.filters import SearchFilters
from domain.discovery.query_class import DESCRIPTION, DESCRIPTION_WORDS, classify


class Corrector(Protocol):
    def correct(self, text: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class QueryPlan:
    #: the filters every retriever applies
    where: SearchFilters
    #: the words left to match once intent took its filters out
    remainder: str
    #: the catalog's spelling of ``remainder``, when it differs
    corrected: str | None
    #: what to suggest to the user (their whole query, corrected)
    did_you_mean: str | None
    #: retrievers to run; an empty tuple browses the popular list under ``where``
    retrievers: tuple[str, ...]
    #: title, keywords or description (domain/discovery/query_class.py)
    query_class: str = "title"

    @property
    def browse(self) -> bool:
        return not self.retrievers


def plan_query(
    text: str,
    intent: Any,
    explicit: SearchFilters,
    speller: Corrector,
    *,
    use_intent: bool = True,
) -> QueryPlan:
    """``intent``: the intent parser's reading of ``text`` (domain/discovery/intent.py).
    Explicit filters win over parsed ones."""
    # A description ("a cowboy doll jealous of a space ranger toy") mentions genre words
    # without asking for the genre: past a few words only explicit constraints (platform,
    # offer, years) become filters, and the words stay in the text.
    # Its years and people are recollections, often wrong ("late 90s, I think, with the
    # guy from Alien"): as filters they would remove the very title meant, so they stay
    # words too, and the text and its embedding weigh them.
    described = len(text.split()) > DESCRIPTION_WORDS
    parsed = SearchFilters(
        kinds=(intent.kind,) if intent.kind and not described else (),
        genres=intent.genres if not described else (),
        year_from=intent.year_from if not described else None,
        year_to=intent.year_to if not described else None,
        platforms=intent.platforms,
        offer_types=intent.offer_types,
        people=getattr(intent, "people", ()) if not described else (),
    )
    where = explicit.merged(parsed) if use_intent else explicit
    remainder = intent.text if use_intent and not described else text
    only_filters = use_intent and not fold(remainder) and bool(intent.genres)
    if only_filters:
        # "funny sci-fi from the 90s": the filters select, and the words still rank
        # (closest to "funny sci-fi" first) rather than falling back to the popular list
        remainder = " ".join(intent.matched)
    corrected = speller.correct(remainder) if remainder else None
    did_you_mean = None
    if corrected:
        did_you_mean = (
            corrected
            if not use_intent or corrected == remainder
            else (text.replace(remainder, corrected, 1) if remainder in text else corrected)
        )
    if not fold(remainder):
        retrievers: tuple[str, ...] = ()
    elif only_filters:
        retrievers = ("fulltext", "vector")
    else:
        retrievers = ("fulltext", "trigram", "vector")
    query_class = DESCRIPTION if described else classify(remainder)
    return QueryPlan(where, remainder, corrected, did_you_mean, retrievers, query_class)
