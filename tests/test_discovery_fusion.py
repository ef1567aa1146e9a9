"""Pure search logic: fusion, re-ranking, offer keys, filters, facets, autocomplete and
the evaluation metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.discovery.autocomplete import Autocomplete, Entry
from domain.discovery.documents import embedding_text, filter_keys, fold, offer_keys
from domain.discovery.evaluation import (
    LabelledQuery,
    known_item_queries,
    ndcg_at,
    recall_at,
    reciprocal_rank,
    tag_queries,
)
from domain.discovery.facets import FacetDoc, facet_counts
from domain.discovery.filters import FilterError, SearchFilters, allowed_ratings, parse_filters
from domain.discovery.fusion import freshness, rerank, rrf
from domain.discovery.spelling import Speller


def test_rrf_adds_weighted_reciprocal_ranks() -> None:
    fused = rrf({"fulltext": ["a", "b"], "vector": ["b", "c"]}, {"rrf_k": 60, "vector": 2.0})
    assert fused["b"].fused == pytest.approx(1 / 62 + 2 / 61)
    assert fused["a"].fused == pytest.approx(1 / 61)
    assert fused["c"].fused == pytest.approx(2 / 62)
    assert fused["b"].ranks == {"fulltext": 2, "vector": 1}
    # a retriever listing a title twice counts it once, at its best rank
    assert rrf({"trigram": ["x", "x"]}, {})["x"].fused == pytest.approx(1 / 61)


def test_rerank_lifts_by_features_and_breaks_ties_by_id() -> None:
    fused = rrf({"fulltext": ["a", "b", "c"]}, {})
    fused["c"].features = {"title_match": 1.0}
    order = [c.content_id for c in rerank(list(fused.values()), {"title_match": 0.5})]
    assert order == ["c", "a", "b"]
    same = rrf({"x": ["q"], "y": ["p"]}, {})
    assert [c.content_id for c in rerank(list(same.values()), {})] == ["p", "q"]


def test_freshness_halves_every_half_life() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert freshness(now, now, 14) == 1.0
    assert freshness(now - timedelta(days=14), now, 14) == pytest.approx(0.5)
    assert freshness(None, now, 14) == 0.0


def test_offer_keys_answer_every_filter_shape() -> None:
    keys = set(offer_keys([("US", "netflix", "subscription")]))
    for region, platforms, offers in [
        ("US", [], []), (None, ["netflix"], []), (None, [], ["subscription"]),
        ("US", ["netflix"], ["subscription"]), ("US", ["hulu", "netflix"], []),
    ]:  # fmt: skip
        wanted = filter_keys(region, platforms, offers)
        assert wanted is not None and keys & set(wanted), (region, platforms, offers)
    for region, platforms, offers in [("GB", [], []), ("US", ["hulu"], []), (None, [], ["rent"])]:
        assert not keys & set(filter_keys(region, platforms, offers) or [])
    assert filter_keys(None, [], []) is None


def test_fold_and_embedding_text() -> None:
    assert fold("Amélie  (Le Fabuleux Destin d'Amélie Poulain)") == (
        "amelie le fabuleux destin damelie poulain"
    )
    assert (
        embedding_text("Heat", "Heat", ["Crime"], "A cop. A thief.")
        == "Heat. Crime. A cop. A thief"
    )


def test_filters_parse_validate_and_merge() -> None:
    f = parse_filters(
        {"genre": ["comedy,Sci-Fi"], "platform": ["netflix"], "region": ["us"],
         "year_from": ["1990"], "offer": ["free"]},
        genres=["Comedy", "Sci-Fi", "Drama"],
    )  # fmt: skip
    assert f.genres == ("Comedy", "Sci-Fi") and f.region == "US" and f.offer_types == ("free",)
    with pytest.raises(FilterError) as e:
        parse_filters({"genre": ["Space Opera"]}, genres=["Comedy"])
    assert e.value.field == "genre" and "Space Opera" in str(e.value)
    with pytest.raises(FilterError) as e:
        parse_filters({"year_from": ["2000"], "year_to": ["1990"]}, genres=[])
    assert e.value.field == "year_from"
    merged = SearchFilters(genres=("Drama",)).merged(
        SearchFilters(genres=("Comedy",), year_to=1999)
    )
    assert merged.genres == ("Drama",) and merged.year_to == 1999
    assert allowed_ratings("PG") == ["G", "PG", "TV-G", "TV-PG", "TV-Y", "TV-Y7"]


def test_facets_count_each_document_once_per_value() -> None:
    docs = [
        FacetDoc(["Comedy", "Drama"], 1995, offer_keys([("US", "netflix", "subscription"),
                                                        ("US", "netflix", "rent")])),
        FacetDoc(["Comedy"], 2003, offer_keys([("GB", "hulu", "ads")])),
    ]  # fmt: skip
    f = facet_counts(docs, "US")
    assert f["genre"] == [{"value": "Comedy", "count": 2}, {"value": "Drama", "count": 1}]
    assert f["platform"] == [{"value": "netflix", "count": 1}]
    assert {x["value"] for x in f["offer_type"]} == {"rent", "subscription"}
    assert [x["value"] for x in f["decade"]] == ["1990s", "2000s"]
    assert {x["value"] for x in facet_counts(docs, None)["platform"]} == {"hulu", "netflix"}


def test_autocomplete_prefix_word_prefix_popularity_and_typos() -> None:
    ac = Autocomplete(
        [Entry("1", "The Dark Knight", 2008, "movie", 0.9),
         Entry("2", "Dark City", 1998, "movie", 0.2),
         Entry("3", "The Godfather", 1972, "movie", 0.8),
         Entry("4", "Darkman", 1990, "movie", 0.1)],
        [("genre", "Drama")],
    )  # fmt: skip
    titles = [i["title"] for i in ac.complete("dark")[0] if i["type"] == "title"]
    assert titles[:2] == ["Dark City", "Darkman"] or titles[0] == "The Dark Knight"
    assert set(titles) == {"The Dark Knight", "Dark City", "Darkman"}
    assert [i["title"] for i in ac.complete("knig")[0]] == ["The Dark Knight"]
    speller = Speller.from_texts(["The Dark Knight", "Dark City", "The Godfather", "Darkman"])
    items, corrected = ac.complete("godfahter", correct=speller.correct)
    assert corrected == "godfather" and items[0]["title"] == "The Godfather"
    assert {"type": "genre", "value": "Drama"} in ac.complete("dra")[0]


def test_metrics() -> None:
    rel = frozenset({"a", "b"})
    assert ndcg_at(["a", "b", "c"], rel) == pytest.approx(1.0)
    assert ndcg_at(["c", "a"], rel) < 1.0
    assert recall_at(["c", "a"], rel) == 0.5
    assert reciprocal_rank(["c", "a"], rel) == 0.5 and reciprocal_rank([], rel) == 0.0


def test_labelled_sets() -> None:
    tags = [("Time Travel", "1"), ("time travel", "2"), ("time  travel", "3"), ("x", "1")]
    [q] = tag_queries(tags, {"1", "2", "3"}, min_items=3)
    assert q == LabelledQuery("time travel", frozenset({"1", "2", "3"}), "tags")
    titles = {str(i): f"The Long Title Number {i}" for i in range(30)}
    qs = known_item_queries(titles, limit=9)
    assert len(qs) == 9 and all(len(q.relevant) == 1 for q in qs)
    assert any(q.query != fold(titles[next(iter(q.relevant))]) for q in qs)
    assert known_item_queries(titles, limit=9) == qs  # seeded
