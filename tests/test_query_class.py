"""Query classes (domain/discovery/query_class.py): how a query is read before retrieval."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from domain.discovery.query_class import (
    DESCRIPTION,
    KEYWORDS,
    TITLE,
    class_weights,
    classify,
    content_words,
    salient_terms,
    windows,
)
from domain.discovery.ranking import DEFAULT_WEIGHTS, validate_weights

ROBOT = (
    "i saw this as a kid, maybe late 90s. there is a robot left alone on earth after "
    "everyone leaves, it collects junk and has a pet cockroach. then a sleek white robot "
    "shows up from a ship and he falls for her. at the end they go to space where all the "
    "humans are fat in chairs. no dialogue for the first part. I really want to find it "
    "again because my kids would love it and I cannot remember the name at all"
)


def test_queries_are_classed_by_their_length() -> None:
    assert classify("heat") == TITLE
    assert classify("the dark knigt rises") == TITLE
    assert classify("funny heist movie with a twist") == KEYWORDS
    assert classify(ROBOT) == DESCRIPTION
    assert classify("  ") == TITLE


def test_a_description_is_weighed_with_its_own_weights() -> None:
    weights = validate_weights({"description_fulltext": 0.2, "fulltext": 1.5})
    plain = class_weights(weights, TITLE)
    described = class_weights(weights, DESCRIPTION)
    assert plain["fulltext"] == 1.5 and described["fulltext"] == 0.2
    assert described["vector"] == DEFAULT_WEIGHTS["description_vector"]
    # weights with no description_ counterpart are shared
    assert described["title_match"] == plain["title_match"] == DEFAULT_WEIGHTS["title_match"]
    assert not any(k.startswith("description_") for k in (*plain, *described))


def test_a_long_description_is_embedded_in_windows_that_cover_all_of_it() -> None:
    parts = windows(ROBOT, size=40, overlap=10)
    assert len(parts) >= 2
    assert all(len(p.split()) <= 40 for p in parts)
    covered = " ".join(parts).split()
    for word in ROBOT.split():
        assert word in covered
    assert parts[0].startswith("i saw this") and parts[-1].endswith("name at all")
    assert windows("a short query", size=40) == ["a short query"]
    assert windows("   ") == []


@given(
    st.lists(
        st.sampled_from(["alpha", "beta", "gamma", "delta.", "epsilon!", "zeta"]), max_size=300
    )
)
def test_windows_never_lose_a_word_nor_exceed_their_size(words: list[str]) -> None:
    text = " ".join(words)
    parts = windows(text, size=25, overlap=5)
    assert all(len(p.split()) <= 25 for p in parts)
    assert set(text.split()) <= set(" ".join(parts).split())


def test_salient_terms_are_the_rarest_words_the_catalog_holds() -> None:
    doc_freq = {"robot": 40, "earth": 300, "man": 2000, "cockroach": 3, "probe": 25}
    terms = salient_terms(
        ["robot", "earth", "man", "cockroach", "unknownword", "probe"], doc_freq, 10_000
    )
    assert [t for t, _ in terms] == ["cockroach", "probe", "robot", "earth"]
    idf = dict(terms)
    assert idf["cockroach"] > idf["probe"] > idf["robot"] > idf["earth"] > 0
    # "man" is in 20 % of the documents: it would rank half the catalog
    assert "man" not in idf and "unknownword" not in idf
    assert len(salient_terms(list(doc_freq), doc_freq, 10_000, limit=2)) == 2


def test_forum_filler_is_not_a_clue() -> None:
    words = content_words("I remember watching a movie where a robot falls in love").split()
    assert "robot" in words and "love" in words
    assert not {"remember", "watching", "movie"} & set(words)
