"""Search and autocomplete latency through the HTTP API, at the demo catalog's size and at
100,000 titles, with one client and with 8 concurrent clients.

Setup: the 9,742 MovieLens titles are published as events and indexed by the real
indexer and model (vectors come from the embedding cache after the first run). The
100,000-title point adds synthetic titles straight into the search documents: variants
of real titles (a sequel number, a subtitle word) with their vectors jittered, so the
full-text, trigram and vector (Qdrant Edge HNSW) indexes have 100,000 entries of realistic
shape. Embedding 100,000 overviews at ~85 texts/s would take 20 minutes, and latency
depends on the size of the indexes, not on what the extra titles mean.

The API runs as `mgw up` in its own process (uvicorn), the clients here with httpx over
loopback. The baseline in the same run is a bare `GET /health`: the cost of HTTP
and the app around any route. Last line: one JSON object.

    python bench/search_latency.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.settings import Settings  # noqa: E402
from domain.discovery.evaluation import known_item_queries, tag_queries  # noqa: E402
from mgw.search_eval import descriptive_pairs, tag_pairs  # noqa: E402

DESCRIPTIONS = [
    "that animated movie where toys come alive",
    "tom hanks castaway",
    "funny sci-fi from the 90s on netflix",
    "godfahter",
    "a man stranded on a desert island after a plane crash talks to a volleyball",
    "scary movies for kids",
    "heist thriller in las vegas with a big crew",
    "romantic comedy in new york",
    "free horror movies",
    "space adventure with a farm boy who becomes a jedi",
    "dinosaurs escape in a theme park on an island",
    "a hacker learns that reality is a simulation",
    "westerns from the 60s",
    "documentaries about music",
    "the dark knight",
    "star wars",
    "matrx",
    "pulp fictoin",
    "movies on hulu",
    "war movies before 1970",
]
AUTOCOMPLETE = ["t", "to", "toy", "god", "godf", "the dar", "star w", "matr", "pul", "jura",
                "back to", "ali", "forr", "terminat", "ghost", "sh", "fin", "har", "lor",
                "inc"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(data_dir: Path, cache: Path, extra: int) -> dict[str, Any]:
    """Demo titles through the pipeline and the indexer; then ``extra`` synthetic titles."""
    from starlette.testclient import TestClient

    from mgw import demo
    from mgw.app import create_app

    settings = replace(
        Settings.from_env(), data_dir=data_dir, embedding_cache=cache, database_url=None,
        redis_url=None, qdrant_url=None, kafka_bootstrap_servers=None,
    )  # fmt: skip
    events = list(demo.content_events())
    info: dict[str, Any] = {}
    with TestClient(create_app(settings)) as c:
        pub = c.app.state.mgw.publisher  # type: ignore[attr-defined]
        if not extra:  # the demo titles, once
            for i in range(0, len(events), 2000):
                c.portal.call(pub.publish_many, events[i : i + 2000])  # type: ignore[union-attr]
        started = time.perf_counter()
        while True:
            s = c.get("/v1/search/status").json()
            if s["caught_up"]:
                break
            time.sleep(0.5)
        info["index_seconds"] = round(time.perf_counter() - started, 1)
        if extra:
            stores = c.app.state.mgw.stores  # type: ignore[attr-defined]
            t = time.perf_counter()
            c.portal.call(_synthesize, stores, cache, extra)  # type: ignore[union-attr]
            info["synthetic_seconds"] = round(time.perf_counter() - t, 1)
    return info


async def _synthesize(stores: Any, cache_path: Path, n: int) -> None:
    """``n`` variants of the indexed titles: documents in PostgreSQL, jittered vectors (from
    the embedding cache) through the search vector store, as the indexer would write them."""
    from core.embedding import EmbeddingCache, shared_embedder
    from projections.search_documents import payload
    from projections.search_vectors import VectorDoc

    rng = np.random.default_rng(5)
    vectors = stores.search.vectors
    embedder = shared_embedder()
    cache = EmbeddingCache(cache_path, embedder.model_id, embedder.dims)
    async with stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT content_id, kind, title, year, genres, offer_keys, embed_text, text_hash,"
            " people, rating FROM search_docs WHERE embedded_hash = text_hash"
        )
        base = await cur.fetchall()
        known = cache.get_many([r[7] for r in base])
        base = [r for r in base if r[7] in known]
        words = ["II", "III", "Returns", "Reloaded", "Origins", "Legacy", "Redux", "Rising",
                 "Chronicles", "Forever", "Revenge", "Dawn", "Night", "Saga",
                 "Unleashed"]  # fmt: skip
        rows, docs = [], []
        for i in range(n):
            cid, kind, title, year, genres, offers, text, th, people, rating = base[i % len(base)]
            v = np.array(known[th], dtype=np.float32)
            v += rng.normal(0, 0.35 / np.sqrt(v.size), v.size).astype(np.float32)
            v /= np.linalg.norm(v)
            t2 = f"{title} {words[i % len(words)]} {i // len(words) % 97 + 2}"
            y = (year or 2000) + i % 7
            rows.append((f"syn-{i}", kind, t2, y, genres, offers, text))
            fields = {"kind": kind, "genres": genres, "people": people, "year": y,
                      "rating": rating, "offer_keys": offers}  # fmt: skip
            docs.append(VectorDoc(f"syn-{i}", th, v, payload(fields)))
        async with conn.cursor() as cur2:
            for j in range(0, len(rows), 5000):
                await cur2.executemany(
                    "INSERT INTO search_docs (content_id, kind, title, title_norm, year, genres,"
                    " offer_keys, quality, popularity, tsv, embed_text, text_hash,"
                    " embedded_hash, payload_synced) VALUES (%s, %s, %s, lower(%s), %s, %s, %s,"
                    " 0.5, 0, setweight(to_tsvector('english', %s), 'A') ||"
                    " setweight(to_tsvector('english', %s), 'C'), %s, md5(%s), md5(%s), TRUE)",
                    [(r[0], r[1], r[2], r[2], r[3], r[4], r[5], r[2], r[6], r[6], r[6], r[6])
                     for r in rows[j : j + 5000]],
                )  # fmt: skip
        await conn.execute("ANALYZE search_docs")
    cache.close()
    for j in range(0, len(docs), 1000):
        await vectors.upsert(docs[j : j + 1000])
    await vectors.optimize()


def serve(data_dir: Path, cache: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MGW_DATA_DIR": str(data_dir), "MGW_EMBEDDING_CACHE": str(cache),
           "MGW_LOG_LEVEL": "WARNING"}  # fmt: skip
    for k in ("DATABASE_URL", "REDIS_URL", "QDRANT_URL", "KAFKA_BOOTSTRAP_SERVERS"):
        env.pop(k, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "mgw.cli", "up", "--port", str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mgw up did not come up")


def pct(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    q = statistics.quantiles(v, n=100, method="inclusive")
    return {"p50": round(q[49], 2), "p95": round(q[94], 2), "p99": round(q[98], 2), "n": len(v)}


def measure(base: str, requests: list[tuple[str, dict[str, Any]]], clients: int) -> list[float]:
    out: list[float] = []
    lock = threading.Lock()

    def worker(part: list[tuple[str, dict[str, Any]]]) -> None:
        mine = []
        with httpx.Client(base_url=base, timeout=30) as c:
            for path, params in part:
                t = time.perf_counter()
                r = c.get(path, params=params)
                mine.append((time.perf_counter() - t) * 1000)
                r.raise_for_status()
        with lock:
            out.extend(mine)

    parts = [requests[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def query_mix(rounds: int) -> list[str]:
    from mgw import demo

    titles = {e.key: e.payload["title"] for e in demo.content_events()}
    tags = [q.query for q in tag_queries(tag_pairs(), set(titles), limit=60)]
    known = [q.query for q in known_item_queries(titles, limit=60, seed=3)]
    mix = DESCRIPTIONS + tags + known + [""]
    random.Random(1).shuffle(mix)
    return (mix * rounds)[: len(mix) * rounds]


def embedding_throughput() -> dict[str, float]:
    from core.embedding import MiniLMEmbedder
    from mgw import demo

    texts = [
        f"{e.payload['title']}. {', '.join(e.payload['genres'])}. {e.payload['overview'] or ''}"
        for e in demo.content_events(limit=512)
    ]
    emb = MiniLMEmbedder()
    emb.encode(texts[:8])
    t = time.perf_counter()
    emb.encode(texts)
    full = len(texts) / (time.perf_counter() - t)
    t = time.perf_counter()
    emb.encode([e.split(".")[0] for e in texts])
    short = len(texts) / (time.perf_counter() - t)
    return {"overview_texts_per_s": round(full, 1), "title_texts_per_s": round(short, 1)}


def run_point(data_dir: Path, cache: Path, queries: list[str]) -> dict[str, Any]:
    port = free_port()
    proc = serve(data_dir, cache, port)
    base = f"http://127.0.0.1:{port}"
    try:
        search = [("/v1/search", {"q": q, "limit": 10}) for q in queries]
        auto = [("/v1/autocomplete", {"q": p}) for p in AUTOCOMPLETE] * max(1, len(queries) // 20)
        measure(base, search[:60] + auto[:60], 1)  # warm: model, caches, vocabularies
        res: dict[str, Any] = {}
        res["baseline_health_1"] = pct(measure(base, [("/health", {})] * 300, 1))
        res["search_1"] = pct(measure(base, search, 1))
        res["search_8"] = pct(measure(base, search, 8))
        res["autocomplete_1"] = pct(measure(base, auto, 1))
        res["autocomplete_8"] = pct(measure(base, auto, 8))
        # paragraph-long descriptions (mgw/data/search-descriptive.jsonl), each asked once:
        # their embedding (several windows) is not in the query cache, as in real use
        described = [("/v1/search", {"q": q, "limit": 10}) for q, _ in descriptive_pairs()]
        if described:
            res["search_descriptive_1"] = pct(measure(base, described, 1))
        return res
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer queries, 20,000 titles at most")
    ap.add_argument("--cache", default=str(ROOT / ".mgw" / "embeddings" / "cache.sqlite"))
    ap.add_argument("--no-scale", action="store_true", help="the demo catalog only")
    args = ap.parse_args()
    cache = Path(args.cache)
    rounds = 1 if args.quick else 3
    queries = query_mix(rounds)
    out: dict[str, Any] = {"queries_per_run": len(queries)}
    out["embedding"] = embedding_throughput()
    with tempfile.TemporaryDirectory(prefix="mgw-bench-search-") as tmp:
        d = Path(tmp)
        out["demo_setup"] = prepare(d, cache, 0)
        print("demo catalog indexed", out["demo_setup"], file=sys.stderr)
        out["titles_9742"] = run_point(d, cache, queries)
        print(json.dumps(out["titles_9742"]), file=sys.stderr)
        if args.no_scale:
            print(json.dumps(out))
            return
        extra = 10_000 if args.quick else 100_000 - 9_742
        out["scale_setup"] = prepare(d, cache, extra)
        key = f"titles_{9742 + extra}"
        out[key] = run_point(d, cache, queries)
        print(json.dumps(out[key]), file=sys.stderr)
    out["targets"] = {
        "search_p99_ms_9742": 30, "search_p99_ms_100000": 60, "autocomplete_p99_ms": 10,
    }  # fmt: skip
    print(json.dumps(out))


if __name__ == "__main__":
    main()
