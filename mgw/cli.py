"""`mgw`: run Media Gateway, its workers and its operator tasks."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.settings import Settings
from domain.catalog import PLATFORMS as PLATFORM_IDS

#: `mgw eval recs` default; the same rows as ml-latest-small ratings.csv, gzipped
RECS_RATINGS = Path(__file__).parent / "data" / "movielens-ratings.csv.gz"

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
    from core import logs

    logs.configure(level)


def _tracing(service: str) -> None:
    """OpenTelemetry as the OTEL_* variables say (off unless OTEL_TRACES_EXPORTER is set)."""
    from core import tracing

    if tracing.configure(service):
        logging.getLogger("mgw").info("tracing to %s", os.environ["OTEL_TRACES_EXPORTER"])


def cmd_mcp(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os

    from api.mcp import serve_stdio
    from api.mcp_gateway import Gateway

    if not args.timeout > 0 or args.attempts < 1:
        print("mgw mcp: --timeout must be above 0 and --attempts at least 1", file=sys.stderr)
        return 2
    from core.settings import SettingsError, env_value

    try:
        token = args.token or env_value(os.environ, "MGW_API_TOKEN")
        key = env_value(os.environ, "MGW_API_KEY")
    except ValueError as exc:
        raise SettingsError([str(exc)]) from None
    if token and token.startswith("mgw_"):  # an API key given as the token
        token, key = None, token
    url = (args.api_url or os.environ.get("MGW_API_URL") or "http://127.0.0.1:8080").rstrip("/")
    # stdout carries the protocol: every log line goes to stderr
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    gateway = Gateway(
        url,
        authorization=f"Bearer {token}" if token else None,
        api_key=key,
        timeout_s=args.timeout,
        attempts=args.attempts,
        signin_hint="Set MGW_API_TOKEN (an access token, e.g. from `POST /oauth/token` or the "
        "device flow) or MGW_API_KEY (`POST /v1/me/api-keys`) where the assistant starts "
        "`mgw mcp`.",
    )
    try:
        asyncio.run(serve_stdio(gateway))
    except KeyboardInterrupt:
        pass
    return 0


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
    _tracing("mgw-api")
    return run_up(settings, demo=args.demo)


def cmd_worker(args: argparse.Namespace) -> int:
    from mgw.worker import run_workers
    from streams.runner import parse_shard

    settings = _settings(args)
    if args.health_port is not None:
        settings = replace(settings, health_port=args.health_port)
    _logging(settings.log_level)
    _tracing("mgw-worker")
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
    size = args.replay_batch_size
    if size is not None and size < 1:
        print("--batch-size must be at least 1", file=sys.stderr)
        return 2
    if args.processes is not None and args.processes < 1:
        print("--processes must be at least 1", file=sys.stderr)
        return 2
    return asyncio.run(
        run_replay(
            settings,
            args.projector,
            progress=not args.no_progress,
            batch_size=size,
            processes=args.processes,
        )
    )


def cmd_rebuild(args: argparse.Namespace) -> int:
    from mgw.rebuild import run_rebuild

    settings = _settings(args)
    _logging("WARNING")
    return asyncio.run(
        run_rebuild(
            settings,
            args.projector,
            until=args.until,
            grace_s=args.grace,
            progress=not args.no_progress,
            as_json=args.json,
        )
    )


def cmd_backup(args: argparse.Namespace) -> int:
    from mgw.backup import run_backup

    settings = _settings(args)
    _logging("WARNING")
    return asyncio.run(
        run_backup(
            settings,
            Path(args.out),
            since_manifest=Path(args.since) if args.since else None,
            codec=args.codec,
            progress=not args.no_progress,
            as_json=args.json,
        )
    )


def cmd_restore(args: argparse.Namespace) -> int:
    from mgw.backup import run_restore

    settings = _settings(args)
    _logging("WARNING")
    return asyncio.run(
        run_restore(
            settings,
            Path(args.source),
            allow_non_empty=args.allow_non_empty,
            rebuild=not args.no_rebuild,
            progress=not args.no_progress,
            as_json=args.json,
        )
    )


def cmd_ingest(args: argparse.Namespace) -> int:
    from mgw.ingest import run_ingest

    settings = _settings(args)
    _logging("WARNING")
    return asyncio.run(
        run_ingest(
            settings,
            args.platform,
            [Path(p) for p in args.paths],
            progress=not args.no_progress,
            wait=not args.no_wait,
            as_json=args.json,
        )
    )


def cmd_feeds_generate(args: argparse.Namespace) -> int:
    from mgw.feedgen import generate

    if args.scale < 1:
        print("--scale must be at least 1", file=sys.stderr)
        return 2
    summary = generate(Path(args.out), scale=args.scale, seed=args.seed, progress=True)
    print(json.dumps(summary, default=str))
    return 0


def cmd_eval_resolution(args: argparse.Namespace) -> int:
    from mgw.evaluate import run_eval_resolution

    settings = _settings(args)
    _logging("WARNING")
    return asyncio.run(
        run_eval_resolution(settings, Path(args.feeds), show=args.show, fresh=args.data_dir is None)
    )


def cmd_eval_search(args: argparse.Namespace) -> int:
    from mgw.search_eval import run_eval_search

    settings = _settings(args)
    _logging("WARNING")
    if args.personalize:
        from mgw.search_eval_personal import run_eval_search_personal

        return run_eval_search_personal(
            settings, limit_titles=args.titles, pairs=args.tags, known=args.known,
            progress=not args.no_progress, show=args.show,
        )  # fmt: skip
    return run_eval_search(
        settings,
        limit_titles=args.titles,
        tags=args.tags,
        known=args.known,
        descriptive=args.descriptive,
        **({"descriptive_file": Path(args.descriptive_file)} if args.descriptive_file else {}),
        progress=not args.no_progress,
        profiles=[json.loads(w) for w in args.weights],
        show=args.show,
    )


def cmd_eval_recs(args: argparse.Namespace) -> int:
    from mgw.recs_eval import run_eval_recs

    return run_eval_recs(
        Path(args.ratings),
        seed=args.seed,
        sample_users=args.sample_users,
        do_tune=not args.no_tune,
        content=not args.no_content,
        low_weight=args.low_weight,
        progress=not args.no_progress,
    )


def cmd_recs_offline(args: argparse.Namespace) -> int:
    from mgw.recs_offline import run_recs_offline

    return run_recs_offline(
        Path(args.interactions),
        Path(args.users),
        Path(args.out),
        k=args.k,
        do_tune=not args.no_tune,
        low_weight=args.low_weight,
        progress=not args.no_progress,
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    from mgw import migrations
    from mgw.platform import resolve_services

    settings = _settings(args)
    _logging("WARNING")
    action = getattr(args, "action", None) or "up"
    started: list[object] = []
    try:
        db, _, where = resolve_services(settings, started)
        if not args.json:
            print(f"{where['postgres']}", file=sys.stderr)
        d = Path(args.migrations_dir) if args.migrations_dir else migrations.MIGRATIONS_DIR
        if action == "status":
            return migrations.run_status(db, as_json=args.json, directory=d)
        if action == "plan":
            return migrations.run_plan(db, as_json=args.json, show_sql=not args.no_sql, directory=d)
        return migrations.run_up(db, as_json=args.json, allow_edited=args.allow_edited, directory=d)
    finally:
        for s in started:
            s.stop()  # type: ignore[attr-defined]


def cmd_checksum(args: argparse.Namespace) -> int:
    from mgw.checksum import run_checksum

    settings = _settings(args)
    _logging("WARNING")
    return asyncio.run(
        run_checksum(settings, args.projectors, as_json=args.json, progress=not args.no_progress)
    )


def cmd_keys(args: argparse.Namespace) -> int:
    from core.keys import KeyStore

    settings = _settings(args)
    store = KeyStore(settings.keys_dir)
    if args.keys_command == "rotate":
        key = store.rotate()
        print(f"new signing key {key.kid} is active; running APIs pick it up within 30 s")
        print("older keys keep verifying the tokens they signed; retire them after 15 min")
    elif args.keys_command == "retire":
        gone = store.retire(keep=args.keep)
        print(f"retired {len(gone)} key(s): {', '.join(gone) or '-'}")
    keyset = store.load_or_create()
    for kid in sorted(keyset.verifying, reverse=True):
        print(f"{kid}{'  (active)' if kid == keyset.active.kid else ''}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from domain.identity.passwords import calibrate

    p = calibrate(args.target_ms)
    print(f"MGW_ARGON2_TIME_COST={p.time_cost}")
    print(f"MGW_ARGON2_MEMORY_KIB={p.memory_kib}")
    print(f"MGW_ARGON2_PARALLELISM={p.parallelism}")
    print(f"# about {args.target_ms:g} ms per hash on this machine; accounts are rehashed")
    print("# on their next sign-in when these change")
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from mgw import dlq
    from projections.dead_letters import LetterFilter

    settings = _settings(args)
    _logging("WARNING")
    out = dlq.Output(as_json=args.json, progress=not args.no_progress)
    action = args.dlq_command
    if action == "show":
        return asyncio.run(dlq.run_show(settings, args.id, out))
    by = getattr(args, "by", None) or dlq.operator()
    if action == "purge":
        return asyncio.run(
            dlq.run_purge(settings, args.topic, args.projector, out, by=by, note=args.note)
        )
    try:
        since = _since(args.since)
    except ValueError:
        print(f"--since {args.since!r}: give an ISO time (2026-12-01T09:30:00Z)", file=sys.stderr)
        return 2
    f = LetterFilter(
        topic=args.topic, projector=args.projector, reason=args.reason, error=args.error,
        since=since, state=getattr(args, "state", "pending"),
        include_purged=getattr(args, "include_purged", False),
    )  # fmt: skip
    if action == "list":
        return asyncio.run(dlq.run_list(settings, f, args.limit, out))
    if not args.ids and not args.all_matching:
        print(f"name dead letters to {action}, or --all-matching with filters", file=sys.stderr)
        return 2
    return asyncio.run(dlq.run_decide(settings, action, args.ids, f, out, by=by, note=args.note))


def _since(raw: str | None) -> datetime | None:
    if raw is None:
        return None
    when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _dlq_parser(sub: Any, data_dir: Any) -> None:
    dlq = sub.add_parser(
        "dlq",
        help="dead letters: list, show, retry, skip, purge",
        description="Records a projector could not decode or apply sit in <topic>.dlq. List and "
        "inspect them, retry them through their projector once the cause is fixed (a record "
        "retried twice applies once), or skip them; every decision is an event on "
        "ops.dead_letters. Works against a running `mgw up` on the same --data-dir, or "
        "DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS. docs/operations/dead-letters.md",
    )
    dsub = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        data_dir(p)
        p.add_argument("--json", action="store_true", help="JSON on stdout")
        p.add_argument("--no-progress", action="store_true", help="no progress bars")

    def filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--topic", help="the original topic (or its .dlq topic)")
        p.add_argument("--projector", help="the projector that failed the record")
        p.add_argument("--reason", choices=("decode", "rejected", "apply"))
        p.add_argument("--error", metavar="TEXT", help="the error contains TEXT (any case)")
        p.add_argument("--since", metavar="TIME", help="dead at or after an ISO time")

    def decision(p: argparse.ArgumentParser, verb: str) -> None:
        p.add_argument("ids", nargs="*", metavar="ID", help="<projector>@<topic>:<part>:<offset>")
        p.add_argument("--all-matching", action="store_true",
                       help=f"{verb} every pending dead letter the filters match")  # fmt: skip
        p.add_argument("--by", help="who decides (default cli:<user>)")
        p.add_argument("--note", default="", help="why, kept with the decision")

    ls = dsub.add_parser("list", help="dead letters, oldest first (pending ones by default)")
    common(ls)
    filters(ls)
    ls.add_argument("--state", default="pending",
                    choices=("pending", "retried", "skipped", "resolved", "all"))  # fmt: skip
    ls.add_argument("--include-purged", action="store_true", help="also what purge hid")
    ls.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    show = dsub.add_parser("show", help="one dead letter in full")
    common(show)
    show.add_argument("id", metavar="ID", help="<projector>@<topic>:<partition>:<offset>")
    rt = dsub.add_parser("retry", help="re-apply through the projector, exactly once")
    common(rt)
    filters(rt)
    decision(rt, "retry")
    sk = dsub.add_parser("skip", help="decide not to apply (a DeadLetterSkipped event)")
    common(sk)
    filters(sk)
    decision(sk, "skip")
    pg = dsub.add_parser("purge", help="hide resolved dead letters from view (the log keeps them)")
    common(pg)
    pg.add_argument("--topic", help="only this original topic")
    pg.add_argument("--projector", help="only this projector's")
    pg.add_argument("--by", help="who purges (default cli:<user>)")
    pg.add_argument("--note", default="")
    for p in (ls, show, rt, sk, pg):
        p.set_defaults(func=cmd_dlq)


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
    worker.add_argument(
        "--health-port",
        type=int,
        default=None,
        metavar="PORT",
        help="serve /health (503 once the worker's loop stalls), /ready (200 once its stores "
        "and log are open) and /metrics on this port, for Kubernetes probes and Prometheus "
        "(default MGW_HEALTH_PORT; 0: off). Without --projector, each child takes the next port",
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
    replay.add_argument("projector", help="catalog, resolution, availability or playback")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay.add_argument(
        "--batch-size",
        dest="replay_batch_size",
        type=int,
        default=None,
        help="records folded per transaction (default 50000: a replay has no reader "
        "waiting, and larger batches fold more events into each row)",
    )
    replay.add_argument(
        "--processes",
        type=int,
        default=None,
        help="processes replaying a projector whose topics have several partitions, each "
        "over its share of them (default: one per core, at most one per partition; the "
        "embedded log only, a projector holding the embedded vector store always uses one)",
    )
    replay.set_defaults(func=cmd_replay)

    rebuild = sub.add_parser(
        "rebuild",
        help="build a new version of one projection beside the live one, then switch to it",
        description="Blue/green: build PROJECTOR's read model from the whole log in a schema of "
        "its own while the live one keeps serving (no dead letters, derived events or pushes "
        "while it catches up), pause the live projector between two batches, meet its mark, "
        "switch the tables in one transaction (readers wait milliseconds, never fail), then drop "
        "the old version after --grace seconds. Works against a running `mgw up` on the same "
        "--data-dir or DATABASE_URL. With --until, build an as-of copy from what the log held "
        "then and leave it in its schema for an investigation (never switched live). Progress: "
        "GET /v1/admin/rebuilds. docs/operations/rebuild.md",
    )
    data_dir(rebuild)
    rebuild.add_argument("projector", help="the projector's name, e.g. library or playback")
    rebuild.add_argument(
        "--until",
        metavar="TIME|POSITION",
        help="as-of copy: an ISO time (2026-12-01T09:30:00Z) or a position "
        "(topic:partition:offset, as commands return)",
    )
    rebuild.add_argument(
        "--grace", type=float, default=30.0, help="seconds to keep the old version (default 30)"
    )
    rebuild.add_argument("--json", action="store_true", help="one JSON object on stdout")
    rebuild.add_argument("--no-progress", action="store_true", help="no progress bar")
    rebuild.set_defaults(func=cmd_rebuild)
    _dlq_parser(sub, data_dir)

    bak = sub.add_parser(
        "backup",
        help="write the log to Avro container files with a manifest (consistent while running)",
        description="Decide every topic-partition's end offset, then copy the log exactly up to "
        "it (keys, headers, offsets, timestamps) into one Avro Object Container File per "
        "topic-partition segment, with manifest.json (offset ranges, record counts, sha256) and "
        "SHA256SUMS. Safe against a running `mgw up` on the same --data-dir, or DATABASE_URL / "
        "KAFKA_BOOTSTRAP_SERVERS. Projections are not backed up: restore rebuilds them. "
        "docs/operations/backup.md",
    )
    data_dir(bak)
    bak.add_argument("--out", required=True, metavar="DIR", help="a new directory per backup")
    bak.add_argument(
        "--since",
        metavar="MANIFEST",
        help="incremental: only records after this earlier backup's end offsets (its "
        "manifest.json or its directory)",
    )
    bak.add_argument(
        "--codec",
        choices=("deflate", "snappy", "null"),
        default="deflate",
        help="Avro block compression (default deflate)",
    )
    bak.add_argument("--json", action="store_true", help="one JSON summary on stdout")
    bak.add_argument("--no-progress", action="store_true", help="no progress bar")
    bak.set_defaults(func=cmd_backup)

    rst = sub.add_parser(
        "restore",
        help="load a backup (chain) into an empty log, then rebuild every projection",
        description="Verify every file of the backup in --from and of the backups it continues "
        "(sha256 against the manifests), load the records at their original offsets into the "
        "empty log of --data-dir (or DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS), then replay every "
        "projector to the end. docs/operations/backup.md",
    )
    data_dir(rst)
    rst.add_argument("--from", dest="source", required=True, metavar="DIR",
                     help="the newest backup of the chain to restore")  # fmt: skip
    rst.add_argument(
        "--allow-non-empty",
        action="store_true",
        help="the target log may hold a prefix of the backup (an interrupted restore, or an "
        "older link of the chain): load only what follows it",
    )
    rst.add_argument("--no-rebuild", action="store_true",
                     help="leave projections empty (`mgw up` builds them)")  # fmt: skip
    rst.add_argument("--json", action="store_true", help="one JSON summary on stdout")
    rst.add_argument("--no-progress", action="store_true", help="no progress bars")
    rst.set_defaults(func=cmd_restore)

    ingest = sub.add_parser(
        "ingest",
        help="ingest a platform's feed files, then resolve them into the catalog",
        description="Parse and normalize PLATFORM's feed files, append PlatformTitleObserved "
        "and AvailabilityChanged events for the records that changed since the last ingest "
        "(an unchanged feed appends nothing), AvailabilityEnded for records the feed no longer "
        "lists, and run entity resolution and the catalog projections until they are done. "
        "Malformed records are reported with their file and line and skipped. "
        "`mgw ingest all DIR` ingests every feed of a `mgw feeds generate` directory.",
    )
    data_dir(ingest)
    ingest.add_argument("platform", help=f"one of: {', '.join(PLATFORM_IDS)}; or all")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="feed files (all: a directory)")
    ingest.add_argument(
        "--no-wait", action="store_true", help="append only; leave projection to `mgw up`"
    )
    ingest.add_argument("--no-progress", action="store_true", help="no progress bars")
    ingest.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    ingest.set_defaults(func=cmd_ingest)

    feeds = sub.add_parser("feeds", help="partner feed tools")
    feeds_sub = feeds.add_subparsers(dest="feeds_command", metavar="COMMAND", required=True)
    gen = feeds_sub.add_parser(
        "generate",
        help="write eight realistic platform feeds built from the MovieLens titles",
        description="Write one feed per platform (each in its own format, see docs/feeds/) "
        "from the 9,742 MovieLens titles, with the noise real catalogs have, plus truth.csv "
        "(platform record -> MovieLens movie) for `mgw eval resolution`.",
    )
    gen.add_argument("--out", required=True, help="directory to write the feeds to")
    gen.add_argument(
        "--scale", type=int, default=1, help="multiply the titles synthetically (11: 100k+)"
    )
    gen.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    gen.set_defaults(func=cmd_feeds_generate)

    ev = sub.add_parser("eval", help="measure quality")
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="COMMAND", required=True)
    res = ev_sub.add_parser(
        "resolution",
        help="entity resolution against a generated feed set's ground truth",
        description="Ingest the feeds of DIR (a `mgw feeds generate` directory) into a fresh "
        "embedded database, resolve them, and compare the content ids with DIR/truth.csv: "
        "prints pairwise precision, recall and F1 as one JSON line.",
    )
    res.add_argument("--feeds", required=True, help="a `mgw feeds generate` directory")
    res.add_argument(
        "--show", type=int, default=0, metavar="N", help="also print N wrong pairs of each kind"
    )
    data_dir(res)
    res.set_defaults(func=cmd_eval_resolution)
    srch = ev_sub.add_parser(
        "search",
        help="search quality: full text, trigram, vector and hybrid side by side",
        description="Load the MovieLens titles into a fresh embedded catalog, index them with "
        "the embedding model (vectors are cached under the data dir, so a second run is fast), "
        "then run MovieLens tags as queries (the movies carrying a tag are its relevant set) "
        "and known-item queries with typos and partial titles. Prints nDCG@10, Recall@10 and "
        "MRR per retriever and for hybrid search; the last line is one JSON object.",
    )
    srch.add_argument("--titles", type=int, default=None, metavar="N",
                      help="only the first N MovieLens titles (default: all 9,742)")  # fmt: skip
    srch.add_argument("--tags", type=int, default=200, metavar="N", help="tag queries (200)")
    srch.add_argument("--known", type=int, default=150, metavar="N",
                      help="known-item queries (150)")  # fmt: skip
    srch.add_argument("--descriptive", type=int, default=None, metavar="N",
                      help="hand-written descriptions of a film (default: all of "
                      "mgw/data/search-descriptive.jsonl; 0: none)")  # fmt: skip
    srch.add_argument("--descriptive-file", default=None, metavar="JSONL",
                      help="descriptions to use instead: JSON lines with query and the "
                      "MovieLens movieId")  # fmt: skip
    srch.add_argument("--weights", action="append", default=[], metavar="JSON",
                      help='also evaluate these ranking weights, e.g. \'{"vector": 2}\' '
                      "(repeatable; each is a column hybrid:pN)")  # fmt: skip
    srch.add_argument("--show", type=int, default=0, metavar="N",
                      help="print N queries hybrid search did not rank first")  # fmt: skip
    srch.add_argument("--no-progress", action="store_true", help="no progress bars")
    srch.add_argument("--personalize", action="store_true",
                      help="plain vs personalize=true as MovieLens users, on their own tags "
                      "(--tags: (user, tag) pairs; mgw/search_eval_personal.py)")  # fmt: skip
    data_dir(srch)
    srch.set_defaults(func=cmd_eval_search)
    recs_ev = ev_sub.add_parser(
        "recs",
        help="recommendation quality: each model, the tuned blend, popularity, plain EASE",
        description="Split each user's ratings >= 4 80/20 at random, train on the rest "
        "(lower ratings count as weak interest), rank all items with the user's training "
        "items removed, and print NDCG@10, Recall@20, HR@10 and coverage@10 per model; "
        "the last line is one JSON object.",
    )
    recs_ev.add_argument("--ratings", default=str(RECS_RATINGS), metavar="CSV",
                         help="MovieLens ratings CSV, optionally .gz "
                         "(default: the bundled ml-latest-small ratings)")  # fmt: skip
    recs_ev.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    recs_ev.add_argument("--sample-users", type=int, default=None, metavar="N",
                         help="evaluate on N randomly chosen users only (quick runs)")  # fmt: skip
    recs_ev.add_argument("--no-tune", action="store_true",
                         help="use the default settings instead of tuning on the training "
                         "rows")  # fmt: skip
    recs_ev.add_argument("--no-content", action="store_true",
                         help="leave out the genre/people/keyword content model")  # fmt: skip
    recs_ev.add_argument("--low-weight", type=float, default=0.5, metavar="W",
                         help="weight of a rating below 4 in the training input (0.5)")  # fmt: skip
    recs_ev.add_argument("--no-progress", action="store_true", help="no progress bar")
    recs_ev.set_defaults(func=cmd_eval_recs)

    recs = sub.add_parser("recs", help="recommendation tools")
    recs_sub = recs.add_subparsers(dest="recs_command", metavar="COMMAND", required=True)
    off = recs_sub.add_parser(
        "offline",
        help="train on a ratings CSV and write top-k recommendations as JSON lines",
        description="Train the recommender the online service uses (tune on the file, then "
        "fit) on a MovieLens-style CSV (userId,movieId,rating,timestamp; every row is "
        "interest, weighted by its rating) and write one line "
        '{"user": ..., "items": [...]} per listed user, best first, never an item the user '
        "has in the file. A user with no rows gets the most popular items.",
    )
    off.add_argument("--interactions", required=True, metavar="CSV",
                     help="ratings CSV with header userId,movieId,rating,timestamp "
                     "(.gz accepted)")  # fmt: skip
    off.add_argument("--users", required=True, metavar="TXT",
                     help="file with one userId per line: the users to recommend for")  # fmt: skip
    off.add_argument("--k", type=int, default=20, help="items per user (default 20)")
    off.add_argument("--out", required=True, metavar="JSONL", help="where to write the lines")
    off.add_argument("--no-tune", action="store_true",
                     help="skip tuning on the file (faster; default settings)")  # fmt: skip
    off.add_argument("--low-weight", type=float, default=0.5, metavar="W",
                     help="weight of a rating below 80%% of the top rating (0.5)")  # fmt: skip
    off.add_argument("--no-progress", action="store_true", help="no progress bars")
    off.set_defaults(func=cmd_recs_offline)

    keys = sub.add_parser(
        "keys",
        help="token signing keys: list, rotate, retire",
        description="ES256 keys that sign access and ID tokens, one PEM per key id under "
        "<data dir>/keys/signing (MGW_KEYS_DIR). Rotating makes a new key active; older ones "
        "keep verifying until retired. The JWKS document lists every key kept.",
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="COMMAND", required=True)
    for name, text in (("list", "list the keys"), ("rotate", "make a new active key")):
        k = keys_sub.add_parser(name, help=text)
        data_dir(k)
        k.set_defaults(func=cmd_keys)
    ret = keys_sub.add_parser("retire", help="delete all but the newest --keep keys")
    ret.add_argument("--keep", type=int, default=2, help="keys to keep (default 2)")
    data_dir(ret)
    ret.set_defaults(func=cmd_keys)

    cal = sub.add_parser(
        "calibrate-passwords",
        help="measure argon2id here and print the parameters for a target time",
    )
    cal.add_argument("--target-ms", type=float, default=50.0, help="time per hash (50)")
    cal.set_defaults(func=cmd_calibrate)

    mig = sub.add_parser(
        "migrate",
        help="database migrations: status, plan, up (the default)",
        description="Schema migrations (ops/migrations/*.sql), each applied once under an "
        "advisory lock with its sha256 recorded. `status` lists applied, pending and edited "
        "files; `plan` prints what `up` would run and the projections to rebuild after; `up` "
        "applies them, refusing while an applied file has been edited. Works against a "
        "running `mgw up` on the same --data-dir, or DATABASE_URL. "
        "docs/operations/migrations.md",
    )
    data_dir(mig)
    mig.add_argument("--json", action="store_true", help="one JSON object on stdout")
    mig.add_argument("--allow-edited", action="store_true", help=argparse.SUPPRESS)
    mig.add_argument("--no-sql", action="store_true", help=argparse.SUPPRESS)
    mig.add_argument(
        "--migrations-dir", metavar="DIR", help="the .sql files (default: those mgw ships)"
    )
    mig.set_defaults(func=cmd_migrate, action="up")
    msub = mig.add_subparsers(dest="action", metavar="ACTION")
    for action, text in (
        ("status", "every migration: applied, pending, edited (exit 1 if any is edited)"),
        ("plan", "the SQL `up` would run, the tables it touches, the rebuilds it calls for"),
        ("up", "apply pending migrations (the default)"),
    ):
        m = msub.add_parser(action, help=text, description=text)
        # SUPPRESS: an option given before the action (`migrate --json status`) is kept
        m.add_argument("--data-dir", default=argparse.SUPPRESS, help="as for migrate")
        m.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="JSON")
        m.add_argument("--migrations-dir", default=argparse.SUPPRESS, help="as for migrate")
        if action == "plan":
            m.add_argument(
                "--no-sql", action="store_true", default=argparse.SUPPRESS, help="names only"
            )
        if action == "up":
            m.add_argument(
                "--allow-edited",
                action="store_true",
                default=argparse.SUPPRESS,
                help="accept edited applied files as they are now (records their new "
                "checksum; runs nothing again)",
            )

    mcp = sub.add_parser(
        "mcp",
        help="an MCP server over stdio, for assistants (a client of a running gateway)",
        description="Serve the Model Context Protocol on stdin/stdout so an assistant can "
        "search the catalog, tell where a title streams and keep the user's watchlist. Each "
        "tool calls the REST API of a running gateway (`mgw up`). Signed out, only the public "
        "tools are offered; set MGW_API_TOKEN (or MGW_API_KEY) for the personal ones. The "
        "same tools are served over streamable HTTP at /mcp by the API itself.",
        epilog='example client configuration: {"mcpServers": {"media-gateway": {"command": '
        '"mgw", "args": ["mcp"], "env": {"MGW_API_TOKEN": "..."}}}}',
    )
    mcp.add_argument(
        "--api-url",
        default=None,
        help="the gateway to call (default MGW_API_URL, else http://127.0.0.1:8080)",
    )
    mcp.add_argument(
        "--token",
        default=None,
        help="access token or API key (default MGW_API_TOKEN or MGW_API_KEY; an argument is "
        "visible to other local users in the process list, the environment is not)",
    )
    mcp.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="how long one attempt at an API call may take (default 10)",
    )
    mcp.add_argument(
        "--attempts",
        type=int,
        default=3,
        help="attempts per call when the API is unreachable, busy or slow (default 3)",
    )
    mcp.set_defaults(func=cmd_mcp)

    cks = sub.add_parser(
        "checksum",
        help="one stable checksum per projection",
        description="Print a digest of each projection's rows (and playback's Redis keys): "
        "the one replay and rebuild compare. Equal digests on two replicas, or before and "
        "after a rebuild, mean equal state. Works against a running `mgw up` on the same "
        "--data-dir, or DATABASE_URL.",
    )
    data_dir(cks)
    cks.add_argument("projectors", nargs="*", metavar="PROJECTOR", help="default: every one")
    cks.add_argument("--json", action="store_true", help='{"<projector>": "<hex>", ...}')
    cks.add_argument("--no-progress", action="store_true", help="no progress bar")
    cks.set_defaults(func=cmd_checksum)

    from ops.chaos.cli import register as chaos

    chaos(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from core.db import MigrationEdited
    from core.settings import SettingsError

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except MigrationEdited as exc:  # any command that migrates as it starts: a refusal, not a crash
        print(f"mgw {args.command}: {exc}", file=sys.stderr)
        return 1
    except SettingsError as exc:  # every bad value named at once, before anything starts
        print(f"mgw {args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
