"""Playback projection throughput: embedded runner vs Faust workers on Kafka vs a naive
per-event agent, in one run on this machine.

    python bench/projection_throughput.py [--events 200000] [--users 10000]

(a) embedded: the in-process runner reading the PostgreSQL log, batches of --batch-size.
(b) kafka:    `mgw worker --projector playback` processes (Faust, one consumer group)
              reading a local KRaft broker; timed from the first applied batch to the last,
              so worker start-up and group join are not counted (they are reported).
              Then the same with `--runtime confluent` (librdkafka consumer group).
(a2) the same log shared by --embedded-processes `mgw worker --runtime embedded --shard I/N`
     processes, each owning a share of the partitions (what `mgw up --projector-processes N`
     runs), timed like (b).
(c) naive:    what a plain per-event agent does: decode one event, one autocommit UPSERT,
              next event. Timed on the first --naive-sample events (at ~2,500/s the whole
              set would take minutes; the rate is what is compared).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.codec import default_codec  # noqa: E402
from core.db import migrate, open_pool  # noqa: E402
from core.events import Event  # noqa: E402
from core.gc_tuning import tune_for_batches  # noqa: E402
from core.topics import PLAYBACK  # noqa: E402
from mgw.replay import replay, replay_processes, start_workers  # noqa: E402
from mgw.worker import worker_argv  # noqa: E402
from projections.base import Stores  # noqa: E402
from projections.playback import PlaybackProjector  # noqa: E402
from streams.log import OutgoingRecord  # noqa: E402
from streams.runner import EmbeddedRunner  # noqa: E402


def make_records(n: int, users: int, seed: int = 11) -> list[OutgoingRecord]:
    rng = random.Random(seed)
    codec = default_codec()
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    titles = [f"title-{i}" for i in range(5000)]
    per_user = {u: rng.sample(titles, 5) for u in range(users)}
    out = []
    for i in range(n):
        u = i % users
        content = per_user[u][rng.randrange(5)]
        at = t0 + timedelta(seconds=i)
        e = Event(
            "PlaybackProgressed",
            f"user-{u}",
            {
                "user_id": f"user-{u}",
                "content_id": content,
                "device_id": "tv",
                "position_s": float(rng.randrange(0, 7200)),
                "duration_s": 7200.0,
                "occurred_at": at,
            },
            occurred_at=at,
            producer="bench",
        )
        out.append(
            OutgoingRecord(e.key.encode(), codec.encode(e.event_type, e.payload), e.headers())
        )
    return out


def create_db(admin_uri: str, name: str) -> str:
    with psycopg.connect(admin_uri, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    base, _, query = admin_uri.partition("?")
    uri = f"{base.rsplit('/', 1)[0]}/{name}" + (f"?{query}" if query else "")
    migrate(uri)
    return uri


def applied_through(uri: str) -> int:
    with psycopg.connect(uri, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(next_offset), 0) FROM projection_watermarks"
            " WHERE projector = 'playback'"
        ).fetchone()
    return int(row[0]) if row else 0


async def bench_embedded(
    uri: str, redis_url: str, records: list[OutgoingRecord], batch_size: int
) -> dict[str, float]:
    import redis.asyncio as aioredis

    from streams.embedded import EmbeddedLog

    log = await EmbeddedLog(uri).open()
    t = time.perf_counter()
    for i in range(0, len(records), 20000):
        await log.append_batch(PLAYBACK.name, records[i : i + 20000])
    append_s = time.perf_counter() - t
    tune_for_batches()  # as `mgw up`, workers and `mgw replay` do once started
    pool = open_pool(uri, max_size=4)
    await pool.open(wait=True)
    redis = aioredis.from_url(redis_url)
    await redis.flushdb()
    from core.settings import Settings
    from projections import maintenance

    stores = Stores(pg=pool, redis=redis)
    lanes = Settings.from_env().projector_lanes  # what `mgw up` runs (MGW_PROJECTOR_LANES)
    runs: dict[int, float] = {}
    prof = os.environ.get("BENCH_PROFILE")
    for n in sorted({1, lanes}):  # one lane first, for comparison
        await maintenance.clear(stores, PlaybackProjector())
        runner = EmbeddedRunner(
            log,
            stores,
            [PlaybackProjector()],
            batch_size=batch_size,
            linger_ms=0,
            lanes={"playback": n},
        )
        if prof and n == lanes:
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
        t = time.perf_counter()
        applied = await runner.catch_up()
        runs[n] = time.perf_counter() - t
        if prof and n == lanes:
            profiler.disable()
            profiler.dump_stats(prof)
        assert applied == len(records), (n, applied, len(records))
    project_s = runs[lanes]
    # `mgw replay playback`: the projection cleared and rebuilt from the whole log, as the
    # command runs it (no dead-letter topic, no emitted events; one process per core over
    # disjoint partitions), and the same in one process for comparison
    settings = Settings(database_url=uri, redis_url=redis_url)
    replays: dict[int, float] = {}
    start_workers()  # as `mgw replay` does before its clock starts
    for processes in sorted({1, replay_processes(settings, PlaybackProjector(), log, None)}):
        await maintenance.clear(stores, PlaybackProjector())
        t = time.perf_counter()
        replayed = await replay(settings, PlaybackProjector(), stores, log, processes=processes)
        replays[processes] = time.perf_counter() - t
        assert replayed == len(records), (processes, replayed, len(records))
    await redis.aclose()
    await pool.close()
    await log.close()
    n = max(replays)
    return {
        "append_eps": len(records) / append_s,
        "eps": len(records) / project_s,
        "seconds": project_s,
        "lanes": lanes,
        "one_lane_eps": len(records) / runs[1],
        "replay_eps": len(records) / replays[n],
        "replay_processes": n,
        "replay_one_process_eps": len(records) / replays[1],
    }


async def embedded_append(uri: str, records: list[OutgoingRecord]) -> None:
    from streams.embedded import EmbeddedLog

    log = await EmbeddedLog(uri).open()
    for i in range(0, len(records), 20000):
        await log.append_batch(PLAYBACK.name, records[i : i + 20000])
    await log.close()


async def kafka_append(bootstrap: str, records: list[OutgoingRecord]) -> float:
    from core.topics import ALL_TOPICS
    from streams.kafka import KafkaLog

    log = await KafkaLog(bootstrap).open()
    await log.ensure_topics(ALL_TOPICS)
    t = time.perf_counter()
    for i in range(0, len(records), 20000):
        await log.append_batch(PLAYBACK.name, records[i : i + 20000])
    secs = time.perf_counter() - t
    await log.close()
    return len(records) / secs


def bench_workers(
    uri: str,
    redis_url: str,
    bootstrap: str | None,
    n: int,
    batch_size: int,
    workers: int,
    logdir: Path,
    runtime: str = "faust",
) -> dict[str, float]:
    spy_dir = os.environ.get("BENCH_PYSPY")
    env = {
        **os.environ,
        "DATABASE_URL": uri,
        "REDIS_URL": redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap or "",
        "MGW_BATCH_SIZE": str(batch_size),
        "MGW_LOG_LEVEL": "WARNING",
        "MGW_DATA_DIR": str(logdir / "data"),
    }
    procs = []
    started = time.perf_counter()
    for w in range(workers):
        with open(logdir / f"worker-{runtime}-{w}.log", "wb") as out:
            argv = worker_argv(
                "playback", runtime, (w, workers) if runtime == "embedded" else (0, 1)
            )
            if spy_dir:  # py-spy samples each worker: the profile the docs cite
                spy_out = Path(spy_dir) / f"{runtime}-{w}.txt"
                argv = ["py-spy", "record", "-r", "200", "-f", "raw", "-o", str(spy_out), "--"]
                argv += worker_argv(
                    "playback", runtime, (w, workers) if runtime == "embedded" else (0, 1)
                )
            procs.append(
                subprocess.Popen(
                    argv,
                    cwd=ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    try:
        first_at, first_n = None, 0
        deadline = time.perf_counter() + 600
        while True:
            done = applied_through(uri)
            now = time.perf_counter()
            if first_at is None and done > 0:
                first_at, first_n = now, done
            if done >= n:
                break
            if now > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join(p.read_text()[-2000:] for p in logdir.glob("worker-*.log"))
                raise RuntimeError(f"{runtime} workers stalled at {done}/{n}:\n{logs}")
            time.sleep(0.02)
        end = time.perf_counter()
    finally:
        for p in procs:
            # py-spy passes SIGINT on to the worker and then writes its profile
            p.send_signal(signal.SIGINT if spy_dir else signal.SIGTERM)
        for p in procs:
            p.wait(60)
    assert first_at is not None
    window = end - first_at
    if first_n >= n or window <= 0:
        # too few events to see more than one poll: count start-up in (a lower bound)
        first_n, window = 0, end - started
    return {
        "eps": (n - first_n) / window,
        "seconds": window,
        "startup_s": first_at - started,
        "first_batch": first_n,
    }


def forget_group(bootstrap: str, group: str) -> None:
    """Drop a consumer group's committed offsets, so the next run starts from the top."""
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for _ in range(50):  # the group empties a moment after its workers exit
        try:
            admin.delete_consumer_groups([group])[group].result(timeout=10)
            return
        except Exception:
            time.sleep(0.2)
    raise RuntimeError(f"could not delete consumer group {group}")


def bench_naive(uri: str, records: list[OutgoingRecord], sample: int) -> dict[str, float]:
    codec = default_codec()
    sample_records = records[:sample]
    with psycopg.connect(uri, autocommit=True) as conn:
        conn.execute("CREATE TABLE naive_positions (LIKE playback_positions INCLUDING ALL)")
        t = time.perf_counter()
        for r in sample_records:
            _, p = codec.decode(r.value)
            conn.execute(
                "INSERT INTO naive_positions (user_id, content_id, device_id, position_s,"
                " duration_s, updated_at, event_count) VALUES (%s,%s,%s,%s,%s,%s,1)"
                " ON CONFLICT (user_id, content_id) DO UPDATE SET position_s = EXCLUDED.position_s,"
                " device_id = EXCLUDED.device_id, duration_s = EXCLUDED.duration_s,"
                " updated_at = EXCLUDED.updated_at,"
                " event_count = naive_positions.event_count + 1",
                (
                    p["user_id"],
                    p["content_id"],
                    p["device_id"],
                    p["position_s"],
                    p["duration_s"],
                    p["occurred_at"],
                ),
            )
        secs = time.perf_counter() - t
    return {"eps": len(sample_records) / secs, "seconds": secs}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=10_000)
    ap.add_argument("--batch-size", type=int, default=10000)
    ap.add_argument("--naive-sample", type=int, default=10_000)
    ap.add_argument(
        "--kafka-workers",
        type=int,
        default=1,
        help="Faust worker processes in the playback consumer group",
    )
    ap.add_argument(
        "--embedded-processes",
        type=int,
        default=2,
        help="processes sharing the playback partitions in the sharded embedded run",
    )
    ap.add_argument("--skip-kafka", action="store_true")
    args = ap.parse_args()

    from mgw import embedded

    work = Path(tempfile.mkdtemp(prefix="mgw-bench-"))
    print(f"bench: {args.events} events over {args.users} users, data in {work}", file=sys.stderr)
    pg = embedded.start_postgres(work)
    rd = embedded.start_redis(work)
    broker = None
    try:
        records = make_records(args.events, args.users)
        sock = rd.server.socket_file
        emb = asyncio.run(
            bench_embedded(
                create_db(pg.uri, "bench_embedded"), f"unix://{sock}?db=1", records, args.batch_size
            )
        )
        print(
            f"embedded: {emb['eps']:,.0f} events/s with {emb['lanes']} lanes"
            f" ({emb['one_lane_eps']:,.0f}/s with one; append {emb['append_eps']:,.0f}/s,"
            f" replay {emb['replay_eps']:,.0f}/s with {emb['replay_processes']} processes,"
            f" {emb['replay_one_process_eps']:,.0f}/s with one)",
            file=sys.stderr,
        )
        sharded_uri = create_db(pg.uri, "bench_sharded")
        asyncio.run(embedded_append(sharded_uri, records))
        sharded = bench_workers(
            sharded_uri,
            f"unix://{sock}?db=4",
            None,
            args.events,
            args.batch_size,
            args.embedded_processes,
            work,
            "embedded",
        )
        print(
            f"embedded: {sharded['eps']:,.0f} events/s with {args.embedded_processes} "
            "processes sharing the partitions",
            file=sys.stderr,
        )
        naive = bench_naive(create_db(pg.uri, "bench_naive"), records, args.naive_sample)
        print(f"naive:    {naive['eps']:,.0f} events/s", file=sys.stderr)
        kafka: dict[str, float] = {}
        confluent: dict[str, float] = {}
        if not args.skip_kafka:
            from tests.kafka_broker import start_broker

            broker = start_broker(work / "kafka")
            kafka_append_eps = asyncio.run(kafka_append(broker.bootstrap, records))
            kafka = bench_workers(
                create_db(pg.uri, "bench_kafka"),
                f"unix://{sock}?db=2",
                broker.bootstrap,
                args.events,
                args.batch_size,
                args.kafka_workers,
                work,
            )
            kafka["append_eps"] = kafka_append_eps
            print(
                f"kafka:    {kafka['eps']:,.0f} events/s with Faust (append "
                f"{kafka_append_eps:,.0f}/s, worker start-up {kafka['startup_s']:.1f}s)",
                file=sys.stderr,
            )
            # the same events again, through the confluent-kafka consumer-group runtime
            forget_group(broker.bootstrap, "mgw-playback")
            confluent = bench_workers(
                create_db(pg.uri, "bench_confluent"),
                f"unix://{sock}?db=3",
                broker.bootstrap,
                args.events,
                args.batch_size,
                args.kafka_workers,
                work,
                "confluent",
            )
            print(
                f"kafka:    {confluent['eps']:,.0f} events/s with confluent-kafka "
                f"(start-up {confluent['startup_s']:.1f}s)",
                file=sys.stderr,
            )
    finally:
        if broker is not None:
            broker.stop()
        rd.stop()
        pg.stop()
    result = {
        "events": args.events,
        "embedded_eps": round(emb["eps"]),
        "kafka_eps": round(kafka["eps"]) if kafka else None,
        "naive_eps": round(naive["eps"]),
        "embedded_vs_naive": round(emb["eps"] / naive["eps"], 1),
        "embedded_sharded_eps": round(sharded["eps"]),
        "embedded_sharded_vs_naive": round(sharded["eps"] / naive["eps"], 1),
        "embedded_processes": args.embedded_processes,
        "kafka_vs_naive": round(kafka["eps"] / naive["eps"], 1) if kafka else None,
        "kafka_confluent_eps": round(confluent["eps"]) if confluent else None,
        "kafka_confluent_vs_naive": round(confluent["eps"] / naive["eps"], 1)
        if confluent
        else None,
        "embedded_lanes": emb["lanes"],
        "embedded_one_lane_eps": round(emb["one_lane_eps"]),
        "embedded_append_eps": round(emb["append_eps"]),
        "replay_eps": round(emb["replay_eps"]),
        "replay_processes": emb["replay_processes"],
        "replay_one_process_eps": round(emb["replay_one_process_eps"]),
        "kafka_append_eps": round(kafka["append_eps"]) if kafka else None,
        "kafka_workers": args.kafka_workers,
        "batch_size": args.batch_size,
        "naive_sample": args.naive_sample,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
