"""The hand-written descriptive search set (mgw/data/search-descriptive.jsonl) is what it
claims to be: at least 150 descriptions, each of one MovieLens title in the catalog, none
naming its title and none sharing text with the overview the search index holds."""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

DATA = Path(__file__).resolve().parent.parent / "mgw" / "data"
_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _grams(text: str, n: int = 5) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def _bare_title(title: str) -> str:
    """ "Shining, The (1980)" -> "the shining"; alternative titles in brackets dropped."""
    t = re.sub(r"\s*\(.*?\)", "", title).strip()
    for article in ("The", "A", "An"):
        if t.endswith(f", {article}"):
            t = f"{article} {t[: -len(article) - 2]}"
    return " ".join(_words(t))


def test_the_set_is_large_honest_and_about_catalog_titles() -> None:
    text = (DATA / "search-descriptive.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    with gzip.open(DATA / "ml-latest-small-overviews.csv.gz", "rt", encoding="utf-8") as fh:
        catalog = {int(r["movieId"]): r for r in csv.DictReader(fh)}
    assert len(rows) >= 150
    ids = [r["movieId"] for r in rows]
    assert len(set(ids)) == len(ids), "one description per title"
    for r in rows:
        film = catalog.get(r["movieId"])
        assert film is not None, r
        assert r["title"] == film["title"], (r["title"], film["title"])
        query = r["query"]
        assert len(query.split()) >= 12, query
        # written from memory of the film, not from the text the index holds
        shared = _grams(query) & _grams(film["overview"] or "")
        assert not shared, (r["title"], shared)
        title = _bare_title(film["title"])
        if len(title.split()) >= 2 or len(title) > 4:
            assert f" {title} " not in f" {' '.join(_words(query))} ", (title, query)
