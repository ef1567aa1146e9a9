"""`mgw eval search`: nDCG@10, Recall@10 and MRR of full text, trigram, vector and hybrid
search on MovieLens tag queries and known-item queries, over the MovieLens catalog."""

from __future__ import annotations

import csv
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.settings import Settings
from domain.discovery.evaluation import (
    LabelledQuery,
    known_item_queries,
    summarize,
    tag_queries,
)
from domain.discovery.filters import SearchFilters
from mgw import demo

TAGS = Path(__file__).parent / "data" / "movielens-tags.csv"
MODES = ("fulltext", "trigram", "vector", "hybrid")


def tag_pairs() -> list[tuple[str, str]]:
    """(tag, content id) for every MovieLens tag."""
    from mgw.demo import content_id_for

    with TAGS.open(encoding="utf-8", newline="") as fh:
        return [(r["tag"], content_id_for(r["movieId"])) for r in csv.DictReader(fh)]


def metric_line(label: str, r: dict[str, Any], width: int) -> str:
    """One row of an evaluation table: the label, then nDCG@10, Recall@10 and MRR."""
    return (
        f"  {label:{width}s} nDCG@10 {r['ndcg@10']:.4f}  Recall@10 {r['recall@10']:.4f}"
        f"  MRR {r['mrr']:.4f}"
    )


def _wait_projected(client: Any, projector: str) -> None:
    while client.get("/ready").json()["projectors"][projector]["lag"]:
        time.sleep(0.3)


def _wait_indexed(client: Any, n: int, progress: bool) -> float:
    started = time.perf_counter()
    with tqdm(total=n, desc="embed titles", unit="title", disable=not progress) as bar:
        while True:
            s = client.get("/v1/search/status").json()
            bar.n = s["embedded"]
            bar.refresh()
            if s["caught_up"]:
                return time.perf_counter() - started
            time.sleep(0.5)


def run_eval_search(
    settings: Settings,
    *,
    limit_titles: int | None = None,
    tags: int = 200,
    known: int = 150,
    progress: bool = True,
    profiles: list[dict[str, float]] | None = None,
    show: int = 0,
) -> int:
    """``profiles``: extra ranking weights, each evaluated as its own hybrid column
    ("hybrid:p1", ...) beside the default profile's."""
    from starlette.testclient import TestClient

    from mgw.app import create_app

    events = list(demo.content_events(limit=limit_titles))
    titles = {e.key: e.payload["title"] for e in events}
    queries: list[LabelledQuery] = tag_queries(tag_pairs(), set(titles), limit=tags)
    queries += known_item_queries(titles, limit=known)
    cache = settings.embedding_cache or settings.data_dir / "embeddings" / "cache.sqlite"
    with tempfile.TemporaryDirectory(prefix="mgw-eval-search-") as tmp:
        s = replace(
            settings, data_dir=Path(tmp), database_url=None, redis_url=None, qdrant_url=None,
            vector_store="edge", embedding_cache=cache,
        )  # fmt: skip
        with TestClient(create_app(s)) as c:
            pub = c.app.state.mgw.publisher  # type: ignore[attr-defined]
            # plays first (MovieLens ratings, as in the demo), so popularity is known when
            # the documents are built
            plays = list(demo.rating_plays(known=set(titles)))
            for i in range(0, len(plays), 5000):
                c.portal.call(pub.publish_many, plays[i : i + 5000])  # type: ignore[union-attr]
            _wait_projected(c, "playback")
            for i in range(0, len(events), 2000):
                c.portal.call(pub.publish_many, events[i : i + 2000])  # type: ignore[union-attr]
            index_s = _wait_indexed(c, len(events), progress)
            eng = c.app.state.mgw.search  # type: ignore[attr-defined]
            none = SearchFilters()
            extra = {}
            for n, weights in enumerate(profiles or (), start=1):
                r = c.put(f"/v1/admin/ranking/profiles/p{n}", json={"weights": weights})
                r.raise_for_status()
                extra[f"hybrid:p{n}"] = (f"p{n}", r.headers["X-Consistency-Token"])
            modes = MODES + tuple(extra)
            ranked: dict[str, list[tuple[LabelledQuery, list[str]]]] = {m: [] for m in modes}
            for q in tqdm(queries, desc="queries", disable=not progress):
                call = c.portal.call  # type: ignore[union-attr]
                ranked["fulltext"].append((q, call(eng.fulltext_ids, q.query.split(), none, 10)))
                ranked["trigram"].append((q, call(eng.trigram_ids, q.query, none, 10)))
                ranked["vector"].append((q, call(eng.vector_ids, q.query, none, 10)))
                r = c.get("/v1/search", params={"q": q.query, "limit": 10})
                r.raise_for_status()
                ranked["hybrid"].append((q, [i["id"] for i in r.json()["items"]]))
                for mode, (name, token) in extra.items():
                    r = c.get(
                        "/v1/search",
                        params={"q": q.query, "limit": 10, "profile": name},
                        headers={"X-Consistency-Token": token},
                    )
                    r.raise_for_status()
                    ranked[mode].append((q, [i["id"] for i in r.json()["items"]]))
    if show:
        from domain.discovery.evaluation import reciprocal_rank

        misses = [(q, ids) for q, ids in ranked["hybrid"] if reciprocal_rank(ids, q.relevant) < 1]
        for q, ids in misses[:show]:
            want = ", ".join(titles[r] for r in sorted(q.relevant))[:80]
            got = " | ".join(titles.get(i, i) for i in ids[:3])
            print(f"[{q.set_name}] {q.query!r}: want {want}; got {got}", file=sys.stderr)
    report: dict[str, Any] = {"titles": len(events), "index_seconds": round(index_s, 1)}
    for set_name in ("tags", "known_item", "all"):
        report[set_name] = {
            m: summarize((q, ids) for q, ids in ranked[m] if set_name in ("all", q.set_name))
            for m in modes
        }
    if profiles:
        report["profiles"] = {f"p{n}": w for n, w in enumerate(profiles, start=1)}
    best_single = max(report["all"][m]["ndcg@10"] for m in MODES if m != "hybrid")
    hybrid = report["all"]["hybrid"]["ndcg@10"]
    report["hybrid_vs_best_single"] = round(hybrid / best_single - 1, 4) if best_single else None
    if progress:
        for set_name in ("tags", "known_item", "all"):
            print(f"{set_name} ({report[set_name]['hybrid']['queries']} queries)", file=sys.stderr)
            for m in modes:
                print(metric_line(m, report[set_name][m], 9), file=sys.stderr)
    print(json.dumps(report))
    return 0
