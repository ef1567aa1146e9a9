"""Query planning (domain/discovery/planning.py): pure, on real parser and speller objects."""

from __future__ import annotations

from domain.catalog import PLATFORMS
from domain.discovery.filters import SearchFilters
from domain.discovery.intent import IntentParser
from domain.discovery.planning import plan_query
from domain.discovery.spelling import Speller

GENRES = ["Comedy", "Sci-Fi", "Animation", "Drama", "Horror"]
PARSER = IntentParser(GENRES, PLATFORMS)
SPELLER = Speller({"robot": 20, "earth": 20, "matrix": 10, "alone": 5, "story": 9, "toy": 9})
NOW = 2026


def plan(text: str, explicit: SearchFilters = SearchFilters(), **kw: bool):  # type: ignore[no-untyped-def]
    return plan_query(text, PARSER.parse(text, now_year=NOW), explicit, SPELLER, **kw)


def test_short_queries_turn_intent_into_filters() -> None:
    p = plan("funny sci-fi from the 90s on netflix")
    assert p.where.genres == ("Comedy", "Sci-Fi")
    assert (p.where.year_from, p.where.year_to) == (1990, 1999)
    assert p.where.platforms == ("netflix",)
    # only filters were typed: the genre words still rank, without the trigram retriever
    assert p.retrievers == ("fulltext", "vector") and p.remainder


def test_a_description_keeps_its_genre_words_as_words() -> None:
    text = "a lonely robot cleans up an abandoned earth and falls for a sci-fi probe"
    p = plan(text)
    assert p.where.genres == () and p.remainder == text
    assert p.retrievers == ("fulltext", "trigram", "vector")
    assert p.query_class == "description"


def test_a_description_recalls_years_but_does_not_filter_by_them() -> None:
    # remembered decades are often wrong: a filter would remove the very title meant
    text = "i think it was from the 80s, a robot left alone on earth falls for a probe"
    p = plan(text)
    assert (p.where.year_from, p.where.year_to) == (None, None)
    assert p.remainder == text and p.query_class == "description"
    # a platform named in a description still filters: it is where they want to watch
    on = plan("where is the one with a robot alone on earth falling for a probe on netflix")
    assert on.where.platforms == ("netflix",)
    short = plan("robot from the 80s")
    assert (short.where.year_from, short.where.year_to) == (1980, 1989)
    assert short.query_class == "title"


def test_explicit_filters_win_and_intent_can_be_turned_off() -> None:
    explicit = SearchFilters(genres=("Drama",), year_from=2000)
    p = plan("horror from the 80s", explicit)
    assert p.where.genres == ("Drama",) and p.where.year_from == 2000
    off = plan("horror from the 80s", explicit, use_intent=False)
    assert off.where == explicit and off.remainder == "horror from the 80s"


def test_nothing_left_to_match_browses_and_typos_are_corrected() -> None:
    assert plan("").browse and plan("").retrievers == ()
    p = plan("robto")
    assert p.corrected == "robot" and p.did_you_mean == "robot"
    assert not p.browse
