"""Catalog ingest throughput: eight platform feeds, from files to resolved canonical
content in PostgreSQL, on the embedded runtime, in one run on this machine.

    python bench/ingest_throughput.py [--scale 11] [--naive-sample 2000]

Stages, each timed on the whole feed set:
  parse      read each feed file into raw records (JSON, NDJSON, XML, CSV)
  normalize  raw records -> PlatformRecord (canonical units and vocabularies)
  append     diff against what the log says and append PlatformTitleObserved and
             AvailabilityChanged events (the `mgw ingest` path; parse and normalize
             run again inside it, so its rate is the CLI's front half)
  resolve    entity resolution: PlatformTitleObserved -> ContentResolved
  project    availability and the canonical catalog (ContentResolved -> content rows)

End to end, two ways:
  sequential  platform records / (append + resolve + project): `mgw ingest all DIR` on its
              own, one process doing every stage in turn;
  pipelined   the projectors run as `mgw worker --runtime embedded` processes (one per
              projector, as `mgw up` runs them) while the feeds are appended; timed from
              the first append until the canonical catalog and the search documents have
              applied every resolution and offer (embedding off: it is model-bound).
              Then again without the search worker, done when the catalog is: the
              sequential mode's work, so the two compare like with like.
Baseline in the same run: a naive pipeline on the first --naive-sample records of every
feed: one append per event and one record per projector transaction.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.db import migrate  # noqa: E402
from core.gc_tuning import tune_for_batches  # noqa: E402
from core.settings import Settings  # noqa: E402
from domain.catalog.platforms import platform_module  # noqa: E402
from mgw.platform import open_platform  # noqa: E402
from mgw.worker import worker_argv  # noqa: E402
from projections.registry import by_name  # noqa: E402
from streams.feeds import FeedIngest, IngestSummary, ingest_files  # noqa: E402
from streams.processing import ProjectionPipeline  # noqa: E402
from streams.runner import ProjectorLoop  # noqa: E402


def create_db(admin_uri: str, name: str) -> str:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = admin_uri.partition("?")
    return f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


def time_parse_normalize(feeds: dict[str, Path]) -> dict[str, Any]:
    parse_s = normalize_s = 0.0
    raws = records = 0
    for platform, path in feeds.items():
        mod = platform_module(platform)
        t = time.perf_counter()
        with open(path, "rb") as f:
            fragments = [raw for _, raw in mod.read(f) if isinstance(raw, dict)]
        parse_s += time.perf_counter() - t
        t = time.perf_counter()
        for raw in fragments:
            try:
                records += len(mod.normalize(raw))
            except ValueError:
                pass
        normalize_s += time.perf_counter() - t
        raws += len(fragments)
    return {"fragments": raws, "records": records, "parse_s": parse_s, "normalize_s": normalize_s}


async def catch_up(pf: Any, name: str, batch_size: int) -> int:
    loop = ProjectorLoop(
        ProjectionPipeline(by_name(name), pf.stores, pf.log), pf.log, batch_size=batch_size,
        linger_ms=0,
    )  # fmt: skip
    return await loop.catch_up()


async def bench_pipeline(settings: Settings, feeds: dict[str, Path]) -> dict[str, Any]:
    async with open_platform(settings, with_vectors=False) as pf:
        tune_for_batches()  # as `mgw ingest` does
        t0 = time.perf_counter()
        summaries: list[IngestSummary] = []
        for platform, path in feeds.items():
            summaries.append(await ingest_files(pf.stores, pf.publisher, platform, [path]))
        t1 = time.perf_counter()
        resolved = await catch_up(pf, "resolution", settings.batch_size)
        t2 = time.perf_counter()
        avail = await catch_up(pf, "availability", settings.batch_size)
        t3 = time.perf_counter()
        canon = await catch_up(pf, "catalog", settings.batch_size)
        t4 = time.perf_counter()
        async with pf.stores.pg.connection() as conn:
            row = await (await conn.execute("SELECT count(*) FROM content")).fetchone()
        # a second ingest of the same files: nothing to append
        t5 = time.perf_counter()
        again = [await ingest_files(pf.stores, pf.publisher, p, [f]) for p, f in feeds.items()]
        t6 = time.perf_counter()
    read = sum(s.read for s in summaries)
    return {
        "records": read,
        "events_appended": sum(s.appended for s in summaries),
        "rejected": sum(len(s.rejected) for s in summaries),
        "content_rows": row[0] if row else 0,
        "append_s": t1 - t0,
        "resolve_s": t2 - t1,
        "availability_s": t3 - t2,
        "catalog_s": t4 - t3,
        "end_to_end_s": t4 - t0,
        "applied": {"resolution": resolved, "availability": avail, "catalog": canon},
        "reingest_s": t6 - t5,
        "reingest_appended": sum(s.appended for s in again),
        "reingest_unchanged": sum(s.unchanged for s in again),
    }


#: (projector, topic) pairs that must have applied everything for the catalog to be done;
#: the search documents follow the catalog's projectors (projections/search_index.py)
_FOLLOWED = (
    ("resolution", "catalog.observations"),
    ("availability", "catalog.availability"),
    ("catalog", "catalog.resolution"),
    ("search", "catalog.resolution"),
    ("search", "catalog.availability"),
)


def _caught_up(uri: str, followed: tuple[tuple[str, str], ...] = _FOLLOWED[:3]) -> bool:
    """Every projector named has applied everything its topic holds now."""
    values = ", ".join(f"('{p}', '{t}')" for p, t in followed)
    with psycopg.connect(uri, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT r.projector, h.topic, sum(h.next_offset), sum(coalesce(w.next_offset, 0))"
            f" FROM log_heads h JOIN (VALUES {values})"
            " AS r(projector, topic) ON r.topic = h.topic"
            " LEFT JOIN projection_watermarks w ON w.projector = r.projector"
            " AND w.topic = h.topic AND w.partition = h.partition"
            " GROUP BY r.projector, h.topic"
        ).fetchall()
    heads = {(p, t): (int(end), int(done)) for p, t, end, done in rows}
    return len(heads) == len(followed) and all(
        end > 0 and done >= end for end, done in heads.values()
    )


def bench_pipelined(
    settings: Settings, feeds: dict[str, Path], logdir: Path, *, search: bool = True
) -> dict[str, Any]:
    """``search=False``: the catalog's three projectors only, the work the sequential mode
    does; with ``search``, the search documents' worker as well, done when they are."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "MGW_DATA_DIR": str(logdir / "pipelined-data"),
        "MGW_BATCH_SIZE": str(settings.batch_size),
        "MGW_LOG_LEVEL": "WARNING",
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "QDRANT_URL": "",
        # documents only: embedding is model-bound (~85 titles/s on two cores, docs/search.md)
        # and would take the cores from the stages measured here
        "MGW_EMBEDDINGS": "none",
    }
    assert settings.database_url
    migrate(settings.database_url)
    procs = []
    names = ("resolution", "availability", "catalog", "search")[: 4 if search else 3]
    followed = _FOLLOWED if search else _FOLLOWED[:3]
    for name in names:
        with open(logdir / f"worker-{name}.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    worker_argv(name, "embedded"), cwd=ROOT, env=env, stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )  # fmt: skip
    try:
        time.sleep(3)  # worker start-up is not ingest time
        t0 = time.perf_counter()

        async def append() -> int:
            async with open_platform(settings, with_vectors=False) as pf:
                tune_for_batches()  # as `mgw ingest` and `mgw up` do
                n = 0
                for platform, path in feeds.items():
                    n += (await ingest_files(pf.stores, pf.publisher, platform, [path])).read
                return n

        records = asyncio.run(append())
        appended = time.perf_counter() - t0
        deadline = time.perf_counter() + 1800
        while not _caught_up(settings.database_url, followed):
            if time.perf_counter() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join(f.read_text()[-2000:] for f in logdir.glob("worker-*.log"))
                raise RuntimeError(f"pipelined workers stalled:\n{logs}")
            time.sleep(0.05)
        total = time.perf_counter() - t0
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)
    return {"records": records, "append_s": appended, "end_to_end_s": total}


async def bench_naive(settings: Settings, feeds: dict[str, Path], sample: int) -> dict[str, Any]:
    """One append per event, one record per projector transaction."""
    async with open_platform(settings, with_vectors=False) as pf:
        tune_for_batches()  # the same process settings as the pipelines it is compared with
        t0 = time.perf_counter()
        n = 0
        for platform, path in feeds.items():
            feed = FeedIngest(pf.stores, pf.publisher, platform)
            summary = IngestSummary(platform)
            records = feed.parse(io.BytesIO(path.read_bytes()), path.name, summary)[:sample]
            for event in feed.changes(records, summary, full_feed=False, producer="bench"):
                await pf.publisher.publish(event)
            n += summary.read
        for name in ("resolution", "availability", "catalog"):
            await catch_up(pf, name, 1)
        return {"records": n, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scale", type=int, default=11, help="feed generator scale (11: 100k+)")
    ap.add_argument("--batch-size", type=int, default=10000)
    ap.add_argument("--naive-sample", type=int, default=250, help="records per feed, naive")
    ap.add_argument("--feeds", default=None, help="reuse a generated feed directory")
    args = ap.parse_args()

    from mgw import embedded
    from mgw.feedgen import generate

    work = Path(tempfile.mkdtemp(prefix="mgw-bench-ingest-"))
    out = Path(args.feeds) if args.feeds else work / "feeds"
    gen_s = 0.0
    if not (out / "manifest.json").exists():
        t = time.perf_counter()
        generate(out, scale=args.scale, seed=7, progress=True)
        gen_s = time.perf_counter() - t
    manifest = json.loads((out / "manifest.json").read_text())
    feeds = {p: out / name for p, name in manifest["feeds"].items()}
    titles = (out / "truth.csv").read_text().count("\n") - 1
    print(f"bench: feeds in {out} (generated in {gen_s:.1f}s), data in {work}", file=sys.stderr)

    stages = time_parse_normalize(feeds)
    print(
        f"parse {stages['fragments'] / stages['parse_s']:,.0f} fragments/s, "
        f"normalize {stages['records'] / stages['normalize_s']:,.0f} records/s",
        file=sys.stderr,
    )
    pg = embedded.start_postgres(work)
    rd = embedded.start_redis(work)
    try:
        base = Settings(data_dir=work, redis_url=rd.url, batch_size=args.batch_size)
        fast = asyncio.run(
            bench_pipeline(replace(base, database_url=create_db(pg.uri, "bench_ingest")), feeds)
        )
        recs = fast["records"]
        print(
            f"end to end: {recs:,} records in {fast['end_to_end_s']:.1f}s = "
            f"{recs / fast['end_to_end_s']:,.0f} records/s "
            f"(append {fast['append_s']:.1f}s, resolve {fast['resolve_s']:.1f}s, "
            f"availability {fast['availability_s']:.1f}s, catalog {fast['catalog_s']:.1f}s)",
            file=sys.stderr,
        )
        piped = bench_pipelined(
            replace(base, database_url=create_db(pg.uri, "bench_pipelined")), feeds, work
        )
        print(
            f"pipelined: {piped['records']:,} records in {piped['end_to_end_s']:.1f}s = "
            f"{piped['records'] / piped['end_to_end_s']:,.0f} records/s "
            f"(appended in {piped['append_s']:.1f}s), search documents included",
            file=sys.stderr,
        )
        # the same work as the sequential mode (no search documents), for the comparison
        same = bench_pipelined(
            replace(base, database_url=create_db(pg.uri, "bench_pipelined_catalog")),
            feeds,
            work,
            search=False,
        )
        print(
            f"pipelined: {same['records']:,} records in {same['end_to_end_s']:.1f}s = "
            f"{same['records'] / same['end_to_end_s']:,.0f} records/s without the search "
            "documents (the sequential mode's work)",
            file=sys.stderr,
        )
        naive = asyncio.run(
            bench_naive(
                replace(base, database_url=create_db(pg.uri, "bench_naive")),
                feeds,
                args.naive_sample,
            )
        )
        naive_rps = naive["records"] / naive["seconds"]
        print(f"naive: {naive_rps:,.0f} records/s", file=sys.stderr)
    finally:
        rd.stop()
        pg.stop()
    e2e = recs / fast["end_to_end_s"]
    piped_rps = piped["records"] / piped["end_to_end_s"]
    result = {
        "bench": "ingest_throughput",
        "scale": args.scale,
        "platform_records": recs,
        "truth_rows": titles,
        "content_rows": fast["content_rows"],
        "events_appended": fast["events_appended"],
        "records_per_s_end_to_end": round(e2e),
        "records_per_s_end_to_end_pipelined": round(piped_rps),
        # without the search documents: the same work as records_per_s_end_to_end
        "records_per_s_pipelined_catalog_only": round(same["records"] / same["end_to_end_s"]),
        "target_records_per_s": 20000,
        "stages_records_per_s": {
            "parse": round(stages["fragments"] / stages["parse_s"]),
            "normalize": round(stages["records"] / stages["normalize_s"]),
            "append": round(recs / fast["append_s"]),
            "resolve": round(recs / fast["resolve_s"]),
            "project_availability": round(recs / fast["availability_s"]),
            "project_catalog": round(recs / fast["catalog_s"]),
        },
        "seconds": {k: round(v, 2) for k, v in fast.items() if k.endswith("_s")},
        "pipelined_seconds": {k: round(v, 2) for k, v in piped.items() if k.endswith("_s")},
        "reingest_unchanged": {
            "appended": fast["reingest_appended"],
            "unchanged": fast["reingest_unchanged"],
            "seconds": round(fast["reingest_s"], 2),
        },
        "naive_records_per_s": round(naive_rps),
        "speedup_vs_naive": round(e2e / naive_rps, 1),
        # the ratio target (>= 10x) is for the pipelined mode, what `mgw up` runs
        "speedup_vs_naive_pipelined": round(piped_rps / naive_rps, 1),
        "generate_s": round(gen_s, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
