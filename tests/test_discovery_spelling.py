"""Spelling correction from the catalog's own words."""

from __future__ import annotations

import time

from domain.discovery.spelling import Speller

TITLES = [
    "The Godfather",
    "The Godfather Part II",
    "The Matrix",
    "The Matrix Reloaded",
    "The Matrix Revolutions",
    "Toy Story",
    "Toy Story 2",
    "Star Wars",
    "Amélie",
    "The Terminator",
    "Terminal Velocity",
]
SPELLER = Speller.from_texts(TITLES, extra=["Sci-Fi", "Documentary"])


def test_corrects_a_transposition() -> None:
    assert SPELLER.correct("godfahter") == "godfather"
    assert SPELLER.correct("the godfahter part 2") == "the godfather part 2"


def test_corrects_several_words_and_keeps_separators_and_casing() -> None:
    assert SPELLER.correct("the matrx reloded") == "the matrix reloaded"
    assert SPELLER.correct("The Matrx: Reloded!") == "The Matrix: Reloaded!"
    assert SPELLER.correct("MATRX") == "MATRIX"
    assert SPELLER.correct("  toy  stroy ") == "  toy  story "


def test_none_when_nothing_to_fix() -> None:
    assert SPELLER.correct("the matrix reloaded") is None
    assert SPELLER.correct("") is None
    assert SPELLER.correct("!!! 🎬") is None
    assert SPELLER.correct("zzzzzzzzzz") is None  # nothing near enough


def test_known_words_are_never_changed() -> None:
    # "terminal" is one edit from nothing better but two from "terminator": known wins anyway
    assert SPELLER.correct("terminal") is None
    assert SPELLER.known("Terminal") and SPELLER.known("godfather") and SPELLER.known("sci")
    assert not SPELLER.known("godfahter")
    speller = Speller({"stars": 10, "star": 1})
    assert speller.correct("star") is None


def test_short_words_and_numbers_are_never_changed() -> None:
    assert SPELLER.correct("toi") is None  # three letters: too many neighbours
    assert SPELLER.correct("2") is None
    assert SPELLER.correct("1917") is None
    assert SPELLER.correct("matrx 1999") == "matrix 1999"
    assert Speller({"seven": 3}).correct("se7en") is None


def test_distance_depends_on_length() -> None:
    speller = Speller({"storm": 5, "godfather": 5})
    assert speller.correct("stprm") == "storm"  # five letters: one edit
    assert speller.correct("stprn") is None  # two edits away from a five-letter word
    assert speller.correct("gdfathr") == "godfather"  # longer: two edits


def test_ties_go_to_the_more_frequent_word() -> None:
    speller = Speller({"matrix": 2, "matrax": 50})
    assert speller.correct("matrex") == "matrax"
    assert Speller({"matrix": 50, "matrax": 2}).correct("matrex") == "matrix"
    assert Speller({"matrix": 1, "matrax": 1}).correct("matrex") == "matrax"  # then alphabetical


def test_closest_beats_more_frequent() -> None:
    speller = Speller({"reloaded": 1, "released": 1000})
    assert speller.correct("reloded") == "reloaded"


def test_unicode_words() -> None:
    assert SPELLER.correct("amelie") == "amélie"
    assert SPELLER.correct("Amelie") == "Amélie"


def test_suggestions() -> None:
    assert SPELLER.suggestions("matrx") == ["matrix"]
    assert SPELLER.suggestions("godfather")[0] == "godfather"
    assert SPELLER.suggestions("matrx", limit=0) == []
    assert SPELLER.suggestions("") == []
    assert SPELLER.suggestions("a b") == []
    speller = Speller({"storm": 3, "stork": 9, "story": 5, "stormy": 1})
    assert speller.suggestions("storx") == ["stork", "story", "storm"]
    assert speller.suggestions("storx", limit=1) == ["stork"]


def test_vocabulary_is_document_frequency() -> None:
    # "love" fills one title three times, "lave" is in two: a tie on distance goes to "lave"
    speller = Speller.from_texts(["Love Love Love", "Lave"], extra=["Lave"])
    assert speller.correct("live") == "lave"
    assert not Speller.from_texts(["Se7en 1917"]).known("se7en")  # digits stay out


def test_lookup_is_fast() -> None:
    words = [f"{a}{b}{c}word" for a in "abcdefghij" for b in "klmnopqrst" for c in "uvwxyz"]
    speller = Speller.from_texts(" ".join(words[i : i + 3]) for i in range(0, len(words), 3))
    started = time.perf_counter()
    for word in words[:300]:
        assert speller.correct(word[:-1] + "x") is not None
    assert (time.perf_counter() - started) / 300 < 0.001
