"""`mgw eval search --personalize` end to end on a slice of MovieLens: the real app, the
recommender trained on the withheld histories, plain and personalised search."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mgw.cli import main
from mgw.search_eval_personal import personal_tag_pairs


def test_withheld_titles_are_the_relevant_ones() -> None:
    from mgw import demo

    events = list(demo.content_events(limit=400))
    known = {e.key for e in events}
    plays = list(demo.rating_plays(known=known))
    queries, withheld = personal_tag_pairs(known, plays)
    assert queries
    for pq in queries:
        assert pq.user.startswith("ml-") and pq.query.relevant <= known
        assert {(pq.user, c) for c in pq.query.relevant} <= withheld


def test_personalised_search_report_has_both_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MGW_EMBEDDINGS", "none")
    monkeypatch.setenv("MGW_DATA_DIR", str(tmp_path))
    rc = main(
        ["eval", "search", "--personalize", "--titles", "400", "--tags", "30",
         "--known", "15", "--no-progress"]
    )  # fmt: skip
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["embeddings"] == "none" and report["plays_withheld"] > 0
    for set_name in ("tags", "known_item"):
        for col in ("plain", "personalized"):
            assert report[set_name][col]["queries"] > 0
            assert 0.0 <= report[set_name][col]["ndcg@10"] <= 1.0
    assert report["tags"]["plain"]["queries"] == report["tag_pairs"] <= 30
    # the user's taste moved at least one answer
    changed = report["tags"]["per_query"]["changed_top10"]
    assert changed + report["known_item"]["per_query"]["changed_top10"] > 0
