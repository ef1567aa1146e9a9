"""Backup and restore speeds of the log, against pg_dump/pg_restore of the log table and a
plain read through the log port, in one run on this machine.

    python bench/backup.py [--events 200000] [--users 10000]

(a) `mgw backup` (mgw/backup.py) of a log of --events playback records, deflate and
    snappy: records/s and MB/s (of the log's stored bytes: key, value, headers).
(b) `mgw restore` of that backup into an empty database, load only (--no-rebuild), then
    the projections replayed (what restore does by default), timed apart.
(c) baselines: `pg_dump -Fc -t log_records` and `pg_restore` into an empty database
    (pgserver's own binaries), and a plain read of every record through the log port
    (EmbeddedLog.read, 10,000 a batch): what copying costs before any file is written.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import embedded_settings  # noqa: E402
from bench.projection_throughput import create_db, make_records  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.topics import ALL_TOPICS, PLAYBACK  # noqa: E402
from mgw.backup import backup, end_offsets, restore  # noqa: E402
from streams.embedded import EmbeddedLog  # noqa: E402


def _rate(records: int, stored: int, seconds: float) -> dict[str, float]:
    s = max(seconds, 1e-9)
    return {
        "seconds": round(seconds, 2),
        "records_per_s": round(records / s),
        "mb_per_s": round(stored / s / 1e6, 1),
    }


async def seed(uri: str, events: int, users: int) -> int:
    """Append the records the way producers do (batches through the port); the log's
    stored bytes back."""
    log = await EmbeddedLog(uri).open()
    records = make_records(events, users)
    for i in range(0, len(records), 20_000):
        await log.append_batch(PLAYBACK.name, records[i : i + 20_000])
    await log.close()
    import psycopg

    with psycopg.connect(uri) as conn:
        row = conn.execute(
            "SELECT sum(length(key) + length(value) + length(headers)) FROM log_records"
        ).fetchone()
    return int(row[0]) if row else 0


async def port_read(uri: str) -> tuple[int, float]:
    log = await EmbeddedLog(uri).open()
    started = time.perf_counter()
    n = 0
    for (topic, p), end in (await end_offsets(log, list(ALL_TOPICS))).items():
        at = 0
        while at < end:
            got = await log.read(topic, p, at, 10_000)
            n += len(got)
            at = got[-1].offset + 1
    seconds = time.perf_counter() - started
    await log.close()
    return n, seconds


def pg_tools() -> Path:
    import pgserver

    return Path(pgserver.__file__).parent / "pginstall" / "bin"


def pg_dump_restore(uri: str, target: str, work: Path) -> dict[str, Any]:
    dump = work / "log_records.dump"
    bin_ = pg_tools()
    t0 = time.perf_counter()
    subprocess.run(
        [bin_ / "pg_dump", "-Fc", "-t", "log_records", "-f", dump, "-d", uri], check=True
    )
    t1 = time.perf_counter()
    subprocess.run(
        [bin_ / "pg_restore", "--data-only", "-t", "log_records", "-d", target, dump],
        check=True,
    )
    t2 = time.perf_counter()
    return {"dump_s": t1 - t0, "restore_s": t2 - t1, "bytes": dump.stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=10_000)
    args = ap.parse_args()

    with embedded_settings("mgw-bench-backup-") as settings:
        uri = settings.database_url or ""
        admin = uri  # the bench database is the server's default one
        work = Path(tempfile.mkdtemp(prefix="mgw-bench-backup-files-"))
        stored = asyncio.run(seed(uri, args.events, args.users))
        n = args.events
        print(f"bench: {n:,} records ({stored / 1e6:.1f} MB stored) in {work}", file=sys.stderr)

        out: dict[str, Any] = {"records": n, "stored_mb": round(stored / 1e6, 1)}
        for codec in ("deflate", "snappy"):
            summary, manifest = asyncio.run(
                backup(settings, work / codec, codec=codec, progress=False)
            )
            assert summary.records == n, summary
            out[f"backup_{codec}"] = {
                **_rate(n, stored, summary.seconds),
                "file_mb": round(manifest.bytes / 1e6, 1),
            }
            print(f"backup {codec}: {out[f'backup_{codec}']}", file=sys.stderr)

        target = _target(settings, admin, "bench_restore", work)
        report = asyncio.run(restore(target, work / "deflate", rebuild=False, progress=False))
        assert report["records"] == n, report
        out["restore_load"] = _rate(n, stored, report["seconds"])
        print(f"restore (load): {out['restore_load']}", file=sys.stderr)

        target = _target(settings, admin, "bench_restore_rebuild", work)
        report = asyncio.run(restore(target, work / "deflate", progress=False))
        out["restore_with_rebuild"] = {
            **_rate(n, stored, report["seconds"] + report["rebuild_seconds"]),
            "rebuild_s": report["rebuild_seconds"],
        }
        print(f"restore (load + rebuild): {out['restore_with_rebuild']}", file=sys.stderr)

        read_n, read_s = asyncio.run(port_read(uri))
        assert read_n == n
        out["baseline_port_read"] = _rate(n, stored, read_s)
        dumped = pg_dump_restore(uri, create_db(admin, "bench_pg_restore"), work)
        out["baseline_pg_dump"] = {
            **_rate(n, stored, dumped["dump_s"]),
            "file_mb": round(dumped["bytes"] / 1e6, 1),
        }
        out["baseline_pg_restore"] = _rate(n, stored, dumped["restore_s"])
        print(f"baselines: {out['baseline_port_read']} {out['baseline_pg_dump']}", file=sys.stderr)
        bk, pd = out["backup_deflate"]["seconds"], out["baseline_pg_dump"]["seconds"]
        out["backup_vs_pg_dump"] = round(pd / max(bk, 1e-9), 2)
        rs, pr = out["restore_load"]["seconds"], out["baseline_pg_restore"]["seconds"]
        out["restore_vs_pg_restore"] = round(pr / max(rs, 1e-9), 2)
    print(json.dumps(out))


def _target(settings: Settings, admin: str, name: str, work: Path) -> Settings:
    return replace(settings, database_url=create_db(admin, name), data_dir=work / name)


if __name__ == "__main__":
    main()
