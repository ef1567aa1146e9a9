"""`mgw eval search`: success@10, nDCG@10, Recall@10 and MRR of full text, trigram, vector
and hybrid search on MovieLens tag queries, known-item queries (typos, cut short, plain)
and hand-written descriptions, over the MovieLens catalog."""

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
    KNOWN_ITEM_SETS,
    LabelledQuery,
    descriptive_queries,
    known_item_queries,
    summarize,
    tag_queries,
)
from domain.discovery.filters import SearchFilters
from domain.discovery.query_class import DESCRIPTION, TITLE_WORDS, classify
from mgw import demo

TAGS = Path(__file__).parent / "data" / "movielens-tags.csv"
DESCRIPTIVE = Path(__file__).parent / "data" / "search-descriptive.jsonl"
MODES = ("fulltext", "trigram", "vector", "hybrid")
#: the classes reported, each alone; "known_item" is its three styles together
SETS = ("tags", *KNOWN_ITEM_SETS, "known_item", "descriptive", "all")


def descriptive_pairs(path: Path = DESCRIPTIVE) -> list[tuple[str, str]]:
    """(description, content id) for every hand-written description in ``path`` (JSON
    lines with ``query`` and the MovieLens ``movieId``); none when the file is missing."""
    from mgw.demo import content_id_for

    if not path.exists():
        return []
    with path.open(encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [(r["query"], content_id_for(str(r["movieId"]))) for r in rows]


def _in_set(q: LabelledQuery, set_name: str) -> bool:
    if set_name == "all":
        return True
    if set_name == "known_item":
        return q.set_name in KNOWN_ITEM_SETS
    return q.set_name == set_name


def tag_pairs() -> list[tuple[str, str]]:
    """(tag, content id) for every MovieLens tag."""
    from mgw.demo import content_id_for

    with TAGS.open(encoding="utf-8", newline="") as fh:
        return [(r["tag"], content_id_for(r["movieId"])) for r in csv.DictReader(fh)]


def metric_line(label: str, r: dict[str, Any], width: int) -> str:
    """One row of an evaluation table: the label, then success@10, nDCG@10, Recall@10
    and MRR."""
    return (
        f"  {label:{width}s} success@10 {r.get('success@10', 0.0):.4f}"
        f"  nDCG@10 {r['ndcg@10']:.4f}  Recall@10 {r['recall@10']:.4f}  MRR {r['mrr']:.4f}"
    )


def _wait_projected(client: Any, projector: str) -> None:
    """Until ``projector`` has applied everything; /ready may report lag as unknown for a
    moment (its lag query timed out on a busy machine), which is waited out too."""
    while True:
        lag = client.get("/ready").json()["projectors"].get(projector, {}).get("lag")
        if lag == 0:
            return
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
    descriptive: int | None = None,
    descriptive_file: Path = DESCRIPTIVE,
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
    if descriptive != 0:
        pairs = descriptive_pairs(descriptive_file)
        queries += descriptive_queries(pairs, set(titles), limit=descriptive)
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
            # profiles are an admin's to set: a token minted with the app's own keys
            admin = c.app.state.mgw.identity.user_token(  # type: ignore[attr-defined]
                "eval-search", "ranking:write", roles=("admin",)
            )
            for n, weights in enumerate(profiles or (), start=1):
                r = c.put(
                    f"/v1/admin/ranking/profiles/p{n}",
                    json={"weights": weights},
                    headers={"Authorization": f"Bearer {admin}"},
                )
                r.raise_for_status()
                extra[f"hybrid:p{n}"] = (f"p{n}", r.headers["X-Consistency-Token"])
            modes = MODES + tuple(extra)
            ranked: dict[str, list[tuple[LabelledQuery, list[str]]]] = {m: [] for m in modes}
            for q in tqdm(queries, desc="queries", disable=not progress):
                call = c.portal.call  # type: ignore[union-attr]
                # each retriever as hybrid search runs it for this query's class: full text
                # on a description's salient words, trigram for short queries only
                if classify(q.query) == DESCRIPTION:
                    ft = call(eng.salient_ids, q.query, none, 10)
                else:
                    ft = call(eng.fulltext_ids, q.query.split(), none, 10)
                ranked["fulltext"].append((q, ft))
                short = len(q.query.split()) <= TITLE_WORDS
                tg = call(eng.trigram_ids, q.query, none, 10) if short else []
                ranked["trigram"].append((q, tg))
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
    for set_name in SETS:
        report[set_name] = {
            m: summarize((q, ids) for q, ids in ranked[m] if _in_set(q, set_name)) for m in modes
        }
    if profiles:
        report["profiles"] = {f"p{n}": w for n, w in enumerate(profiles, start=1)}
    best_single = max(report["all"][m]["ndcg@10"] for m in MODES if m != "hybrid")
    hybrid = report["all"]["hybrid"]["ndcg@10"]
    report["hybrid_vs_best_single"] = round(hybrid / best_single - 1, 4) if best_single else None
    desc = report["descriptive"]
    if desc["hybrid"]["queries"]:
        best = max(desc[m]["success@10"] for m in MODES if m != "hybrid")
        report["descriptive_hybrid_vs_best_single"] = round(desc["hybrid"]["success@10"] - best, 4)
    if progress:
        for set_name in SETS:
            print(f"{set_name} ({report[set_name]['hybrid']['queries']} queries)", file=sys.stderr)
            for m in modes:
                print(metric_line(m, report[set_name][m], 9), file=sys.stderr)
    print(json.dumps(report))
    return 0
