"""Fault scenarios: rounds of load with one fault at a random moment, then the checks.

Each round: the mixed workload runs; at a random moment the fault hits (kill -9 of
`mgw up` or of one projector process, a crash of PostgreSQL, a restart of Redis); the
dependency comes back after ``--down`` seconds; the load runs on; then every write
acknowledged so far must be visible, none twice, and after the last round the live
projections must equal a fresh fold of the log.

Counted during the fault window (from the fault until everything answers again):
5xx other than 503, 503 without Retry-After, and requests left without an answer
past the client's timeout. The recovery time is from the dependency's return to the
first success of every route that failed meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ops.chaos.load import ADMIN_EMAIL, PASSWORD, TIMED_OUT, Client, Recorder, Workload
from ops.chaos.stack import Stack
from ops.chaos.verify import check_acknowledged, compare_with_fresh_fold, wait_caught_up

SCENARIOS = ("kill-up", "kill-worker", "restart-db", "restart-redis")
#: the Kafka runtime adds the broker; its projectors run in `mgw worker` processes
KAFKA_SCENARIOS = ("kill-up", "kill-worker", "restart-db", "restart-redis", "restart-broker")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "scenario", choices=(*KAFKA_SCENARIOS, "all"), help="which fault; all: each in turn"
    )
    p.add_argument(
        "--runtime",
        choices=("embedded", "kafka"),
        default="embedded",
        help="embedded: the log in PostgreSQL, projectors in `mgw up` (kill-worker: in its "
        "shard processes); kafka: a KRaft broker on loopback, projectors in `mgw worker` "
        "processes (default embedded)",
    )
    p.add_argument("--rounds", type=int, default=10, help="faults per scenario (default 10)")
    p.add_argument("--users", type=int, default=40, help="simulated users (default 40)")
    p.add_argument("--titles", type=int, default=300, help="seed catalog size (default 300)")
    p.add_argument(
        "--seconds", type=float, default=12, help="load per round, fault inside it (default 12)"
    )
    p.add_argument(
        "--down", type=float, default=3, help="seconds a dependency stays down (default 3)"
    )
    p.add_argument(
        "--after",
        type=float,
        default=10,
        help="seconds of load at least after the dependency is back (default 10)",
    )
    p.add_argument(
        "--hard",
        action="store_true",
        help="restart-redis: SIGKILL instead of a clean stop (loses what its append-only "
        "file had not yet written to disk: up to a second)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    p.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the data directory")


async def _fault(
    stack: Stack, scenario: str, down: float, rnd: random.Random, hard: bool = False
) -> dict[str, Any]:
    """Do the fault; returns when the dependency is back (its own recovery not included)."""
    loop = asyncio.get_running_loop()
    info: dict[str, Any] = {}
    if scenario == "restart-broker":
        await loop.run_in_executor(None, stack.stop_broker)  # type: ignore[attr-defined]
        await asyncio.sleep(down)
        await loop.run_in_executor(None, stack.start_broker)  # type: ignore[attr-defined]
    elif scenario == "kill-up":
        await loop.run_in_executor(None, stack.kill)
        await asyncio.sleep(down)
        info["restart_s"] = round(await loop.run_in_executor(None, stack.start), 2)
    elif scenario == "kill-worker":
        workers = stack.workers()
        if not workers:
            raise RuntimeError("kill-worker needs --projector-processes >= 2")
        victim = rnd.choice(workers)
        info["killed_pid"] = victim.pid
        before = {w.pid for w in workers}
        victim.send_signal(signal.SIGKILL)
        info["respawn_s"] = round(await _respawned(stack, before, victim.pid), 2)
    elif scenario == "restart-db":
        await loop.run_in_executor(None, stack.stop_postgres)
        await asyncio.sleep(down)
        await loop.run_in_executor(None, stack.start_postgres)
    elif scenario == "restart-redis":
        cmd = await loop.run_in_executor(None, stack.stop_redis, hard)
        await asyncio.sleep(down)
        await loop.run_in_executor(None, stack.start_redis, cmd)
    return info


async def _respawned(stack: Stack, before: set[int], victim: int, timeout: float = 60) -> float:
    """Seconds until a new process has taken the killed one's place and /ready is 200."""
    import httpx

    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() - t0 < timeout:
            now = {w.pid for w in stack.workers()}
            if victim not in now and len(now) >= len(before):
                # the shard's own mark, where there is one: /ready also probes every
                # dependency, and under a saturating load its checks can time out
                marked = stack.shards_ready()
                if marked is not None:
                    if marked:
                        return time.monotonic() - t0
                    await asyncio.sleep(0.1)
                    continue
                try:
                    if (await http.get(f"{stack.base}/ready")).status_code == 200:
                        return time.monotonic() - t0
                except httpx.HTTPError:
                    pass
            await asyncio.sleep(0.1)
    raise TimeoutError(f"no process replaced the killed worker within {timeout:.0f} s")


def _window(rec: Recorder, start: float, back: float) -> dict[str, Any]:
    """What clients saw from the fault until every route that failed answered again."""
    failed_routes = {r for t, r, ok in rec.timeline if t >= start and not ok}
    recovery = 0.0
    for route in failed_routes:
        after = [(t, ok) for t, r, ok in rec.timeline if r == route and t >= back]
        if not after:  # not tried again this round (a rare action): nothing to time
            continue
        oks = [t for t, ok in after if ok]
        recovery = max(recovery, (min(oks) - back) if oks else float("inf"))
    end = back + recovery if recovery != float("inf") else float("inf")
    during = [f for f in rec.failures if start <= f[0] <= end]
    return {
        "recovery_s": round(recovery, 2) if recovery != float("inf") else None,
        "failed_routes": sorted(failed_routes),
        "http_5xx_not_503": sum(1 for _, _, s, _ in during if s >= 500 and s != 503),
        "http_503_without_retry_after": sum(1 for _, _, s, ra in during if s == 503 and not ra),
        "http_503": sum(1 for _, _, s, _ in during if s == 503),
        "refused": sum(1 for _, _, s, _ in during if s == 0),
        "timed_out": sum(1 for _, _, s, _ in during if s == TIMED_OUT),
    }


async def run_scenario(
    stack: Stack, client: Client, wl: Workload, scenario: str, args: argparse.Namespace,
    rnd: random.Random,
) -> list[dict[str, Any]]:  # fmt: skip
    rounds = []
    for i in range(args.rounds):
        rec = client.rec
        stop = asyncio.Event()
        load = asyncio.create_task(wl.run(float("inf"), stop))
        try:
            began = time.monotonic()
            await asyncio.sleep(rnd.uniform(1, max(1.5, args.seconds / 3)))
            start = time.monotonic() - rec.t0
            info = await _fault(stack, scenario, args.down, rnd, args.hard)
            back = time.monotonic() - rec.t0
            # the rest of the round, and never less than --after once the dependency is
            # back: a recovery needs requests after the return to be seen at all
            rest = args.seconds - (time.monotonic() - began)
            await asyncio.sleep(max(rest, args.after))
            stop.set()
            await load
        finally:
            load.cancel()  # a fault that failed must not leave users writing into the void
        caught = await wait_caught_up(client, timeout=180)
        f = await check_acknowledged(client, wl.users, wl.ledger)
        t = time.monotonic()
        f.digest_equal, f.digests = await asyncio.get_running_loop().run_in_executor(
            None, compare_with_fresh_fold, stack
        )
        fold_s = time.monotonic() - t
        row = {
            "scenario": scenario,
            "round": i + 1,
            "acked_writes": wl.ledger.acked_writes(),
            **_window(rec, start, back),
            **info,
            "catch_up_s": round(caught, 2),
            "fresh_fold_s": round(fold_s, 1),
            **f.as_dict(),
        }
        if "respawn_s" in info:  # a killed worker is back once its replacement reads
            row["recovery_s"] = max(row["recovery_s"] or 0.0, info["respawn_s"])
        rounds.append(row)
        print(
            f"{scenario} round {i + 1}/{args.rounds}: lost {row['lost']}, duplicated "
            f"{row['duplicated']}, 5xx(not 503) {row['http_5xx_not_503']}, recovery "
            f"{row['recovery_s']} s",
            file=sys.stderr,
            flush=True,
        )
    return rounds


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seed = args.seed if args.seed is not None else int(time.time())
    rnd = random.Random(seed)
    every = KAFKA_SCENARIOS if args.runtime == "kafka" else SCENARIOS
    if args.scenario not in (*every, "all"):
        raise SystemExit(f"mgw chaos: {args.scenario} needs --runtime kafka")
    scenarios = every if args.scenario == "all" else (args.scenario,)
    tmp = None
    if args.data_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="mgw-chaos-"))
    out: dict[str, Any] = {"seed": seed, "runtime": args.runtime, "rounds": [], "scenarios": {}}
    try:
        for scenario in scenarios:
            root = (args.data_dir or tmp) / scenario  # type: ignore[operator]
            shutil.rmtree(root, ignore_errors=True)
            env = {
                "MGW_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
                "MGW_BOOTSTRAP_ADMIN_PASSWORD": PASSWORD,
            }
            stack: Stack
            if args.runtime == "kafka":
                from ops.chaos.kafka_stack import KafkaStack

                stack = KafkaStack(root, env=env)
            else:
                stack = Stack(
                    root, projector_processes=2 if scenario == "kill-worker" else 1, env=env
                )
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, stack.start)
                client = Client(stack.base, Recorder())
                try:
                    titles = await client.seed_titles(args.titles)
                    users = await client.sign_up(f"chaos-{scenario}", args.users)
                    wl = Workload(client, users, titles, seed=seed)
                    rows = await run_scenario(stack, client, wl, scenario, args, rnd)
                finally:
                    await client.close()
            finally:
                await loop.run_in_executor(None, stack.shutdown_services)
            out["rounds"] += rows
            out["scenarios"][scenario] = {
                "rounds": len(rows),
                "acked_writes": rows[-1]["acked_writes"] if rows else 0,
                "lost": sum(r["lost"] for r in rows),
                "duplicated": sum(r["duplicated"] for r in rows),
                "foreign": sum(r["foreign"] for r in rows),
                "http_5xx_not_503": sum(r["http_5xx_not_503"] for r in rows),
                "http_503_without_retry_after": sum(
                    r["http_503_without_retry_after"] for r in rows
                ),
                "refused": sum(r["refused"] for r in rows),
                "timed_out": sum(r["timed_out"] for r in rows),
                "recovery_s_max": max(
                    (r["recovery_s"] if r["recovery_s"] is not None else float("inf")) for r in rows
                ),
                "digest_equal_fresh_fold": all(r["digest_equal"] for r in rows),
                "digests": rows[-1]["digests"] if rows else {},
            }
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    s = out["scenarios"].values()
    out["met"] = {
        "lost_0": all(x["lost"] == 0 for x in s),
        "duplicated_0": all(x["duplicated"] == 0 for x in s),
        "non_503_5xx_0": all(x["http_5xx_not_503"] == 0 for x in s),
        "no_request_hangs": all(x["timed_out"] == 0 for x in s),
        "recovery_le_10s": all(x["recovery_s_max"] <= 10 for x in s),
        "digest_equal_fresh_fold": all(x["digest_equal_fresh_fold"] for x in s),
    }
    return out


def main() -> int:
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(ap)
    result = asyncio.run(run(ap.parse_args()))
    print(json.dumps(result))
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
