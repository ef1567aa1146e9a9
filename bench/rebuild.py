"""Rebuild speed: a blue/green rebuild of the playback projection (``mgw rebuild``)
against the in-place replay it replaces (``mgw replay``), on one log in one run.

    python bench/rebuild.py [--events 200000] [--users 10000]

``--events`` PlaybackProgressed events over ``--users`` users are appended to the embedded
log and projected live (rows and Redis continue-watching). Then:

* rebuild: ``run_rebuild("playback")`` builds the new version in its own schema (side
  effects off), switches it in at the live mark, and replaces the Redis keys user by user;
  timed per phase (build, switch and resync);
* baseline: ``run_replay("playback")`` clears the live projection and replays it in place,
  Redis included, with nothing served meanwhile.

Target (issue 16): the rebuild replays at >= 100,000 events/s. The last line is one JSON
object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench._stack import embedded_settings  # noqa: E402
from bench.projection_throughput import embedded_append, make_records  # noqa: E402
from core.settings import Settings  # noqa: E402
from mgw.platform import open_platform  # noqa: E402
from mgw.rebuild import run_rebuild  # noqa: E402
from mgw.replay import run_replay  # noqa: E402
from projections.registry import by_name  # noqa: E402
from streams.processing import ProjectionPipeline  # noqa: E402
from streams.runner import ProjectorLoop  # noqa: E402


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _project_live(settings: Settings) -> float:
    async with open_platform(settings, with_vectors=False) as pf:
        loop = ProjectorLoop(
            ProjectionPipeline(by_name("playback"), pf.stores, pf.log),
            pf.log,
            batch_size=settings.batch_size,
            linger_ms=0,
        )
        t = time.perf_counter()
        await loop.catch_up()
        return time.perf_counter() - t


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    assert settings.database_url
    records = make_records(args.events, args.users)
    await embedded_append(settings.database_url, records)
    live_s = await _project_live(settings)
    _log(f"live projection: {args.events} events in {live_s:.1f} s")

    got: dict[str, Any] = {}
    t = time.perf_counter()
    code = await run_rebuild(settings, "playback", grace_s=0, progress=False, on_result=got.update)
    rebuild_s = time.perf_counter() - t
    assert code == 0 and got["checksum_before"] == got["checksum_after"], got
    _log(f"rebuild: {got}")

    t = time.perf_counter()
    assert await run_replay(settings, "playback", progress=False) == 0
    replay_s = time.perf_counter() - t
    eps = got["records"] / got["build_s"]
    return {
        "events": args.events,
        "users": args.users,
        "live_projection_eps": round(args.events / live_s),
        "rebuild_build_eps": round(eps),
        "rebuild_build_s": got["build_s"],
        "rebuild_switch_and_resync_s": got["switch_s"],
        "rebuild_total_s": round(rebuild_s, 2),
        "checksums_equal": got["checksum_before"] == got["checksum_after"],
        "baseline_replay_in_place_eps": round(args.events / replay_s),
        "baseline_replay_in_place_s": round(replay_s, 2),
        "target_eps": 100_000,
        "target_met": eps >= 100_000,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--users", type=int, default=10_000)
    args = ap.parse_args()
    with embedded_settings("mgw-bench-rebuild-") as settings:
        result = asyncio.run(run(args, settings))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
