"""The load curve: the mixed workload of ops/chaos/load.py against `mgw up` (embedded
runtime), ramped in steps of simulated users, from processes other than the server.

Each simulated user is a device: it sends one request, waits for the answer, then
thinks for an exponentially distributed time (mean ``--think-s``, default 1 s), so
one user offers about one request a second while the server is fast and less once it
slows down (a closed loop, like real clients; the figures say what was achieved, and
``offered_rps`` is users / think time for comparison: the gap is the slowdown the
users felt). Per step the result has throughput, p50/p95/p99 overall and per route,
the error rate (a failed connection, no answer within 10 s, or a 5xx; a request
that timed out counts as 10 s in the percentiles), the CPU the load generator and the
server used, and the load average, because on a shared two-core machine the client
and everybody else compete with the server. The "knee" is the first step whose
overall p99 passes 200 ms (None if none does).

The generator runs in ``--client-processes`` processes (spawned once, reused by every
step): one asyncio loop of aiohttp at several hundred requests a second costs a good
part of a core, and a saturated client would report its own queueing as server
latency. Each process reports the CPU it used, so a saturated client shows.

    python -m ops.chaos.loadtest --users 500 --step-seconds 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from contextlib import suppress
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from ops.chaos import load
from ops.chaos.stack import Stack

#: the p99 that marks the knee of the curve
KNEE_P99_MS = 200.0
#: default ramp, as fractions of --users (500 users: 50, 100, 200, 300, 500)
RAMP = (0.1, 0.2, 0.4, 0.6, 1.0)
#: a load generator process above this share of one core is queueing its own requests
CLIENT_SATURATED_PCT = 80.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=500, help="simulated users at the last step")
    p.add_argument(
        "--steps",
        default=None,
        help="users per step, comma separated (default 10/20/40/60/100 %% of --users)",
    )
    p.add_argument("--step-seconds", type=float, default=30.0, help="length of each step")
    p.add_argument(
        "--think-s",
        type=float,
        default=1.0,
        help="mean think time between a user's requests (default 1: ~1 request/s per user)",
    )
    p.add_argument("--titles", type=int, default=500, help="titles seeded into the catalog")
    add_stack_arguments(p, in_process="in this process")


def add_stack_arguments(p: argparse.ArgumentParser, *, in_process: str) -> None:
    """The options the load test and the soak share: where the load runs, and the stack."""
    p.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help=f"load generator processes (0: {in_process})",
    )
    p.add_argument(
        "--projector-processes", type=int, default=1, help="`mgw up --projector-processes`"
    )
    p.add_argument(
        "--signup-parallel", type=int, default=8, help="registrations in flight while setting up"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="data directory of the stack (default: a temporary one, removed at the end)",
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")


def parse_steps(raw: str | None, users: int) -> list[int]:
    if raw:
        steps = [int(s) for s in raw.split(",") if s.strip()]
    else:
        steps = [max(1, round(users * f)) for f in RAMP]
    out: list[int] = []
    for s in steps:
        if s < 1:
            raise ValueError(f"a step needs at least one user: {raw}")
        if s not in out:
            out.append(s)
    return out


# -- helpers the soak shares --------------------------------------------------------


def stack_env(**extra: str) -> dict[str, str]:
    """What the harness's stack needs: the bootstrap admin that seeds the catalog."""
    return {
        "MGW_BOOTSTRAP_ADMIN_EMAIL": load.ADMIN_EMAIL,
        "MGW_BOOTSTRAP_ADMIN_PASSWORD": load.PASSWORD,
        **extra,
    }


def data_dir_for(args: argparse.Namespace, prefix: str) -> tuple[Path, bool]:
    """(data dir, remove it at the end)."""
    if args.data_dir is not None:
        return Path(args.data_dir), False
    return Path(tempfile.mkdtemp(prefix=prefix)), not args.keep


async def ready_status(
    base: str, session: aiohttp.ClientSession | None = None
) -> tuple[int, dict[str, Any]]:
    """GET /ready: (HTTP status, body), also when it answers 503; (0, {}) without an
    answer within 10 s."""
    own = session is None
    s = session or aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
    try:
        async with s.get(f"{base}/ready") as r:
            return r.status, dict(await r.json(content_type=None) or {})
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return 0, {}
    finally:
        if own:
            await s.close()


async def ready(base: str, session: aiohttp.ClientSession | None = None) -> dict[str, Any]:
    """GET /ready's body (also when it answers 503); {} when there is no answer."""
    return (await ready_status(base, session))[1]


def total_lag(body: dict[str, Any]) -> int | None:
    """Records appended and not yet applied, over every projector (None: unknown)."""
    projectors = body.get("projectors")
    if not isinstance(projectors, dict) or "error" in projectors:
        return None
    return sum(int(v.get("lag", 0)) for v in projectors.values() if isinstance(v, dict))


async def wait_caught_up(base: str, timeout: float = 120) -> float:
    """Seconds until every projector's lag is 0 (TimeoutError after timeout)."""
    t0 = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        while time.monotonic() - t0 < timeout:
            if total_lag(await ready(base, s)) == 0:
                return time.monotonic() - t0
            await asyncio.sleep(0.5)
    raise TimeoutError(f"projectors still behind after {timeout:.0f} s")


async def setup(
    stack: Stack, n_titles: int, n_users: int, parallel: int, prefix: str
) -> tuple[list[load.User], list[str], list[str], dict[str, Any]]:
    """Start the stack, seed titles, sign users up; (users, titles, words, timings)."""
    t = time.monotonic()
    start_s = await asyncio.to_thread(stack.start)
    rec = load.Recorder()
    client = load.Client(stack.base, rec)
    try:
        t1 = time.monotonic()
        titles = await client.seed_titles(n_titles)
        seed_s = time.monotonic() - t1
        t1 = time.monotonic()
        users = await client.sign_up(prefix, n_users, parallel=parallel)
        signup_s = time.monotonic() - t1
    finally:
        await client.close()
    catch_up_s = await wait_caught_up(stack.base)
    words = load._words(titles)
    timings = {
        "start_s": round(start_s, 1),
        "seed_s": round(seed_s, 1),
        "signup_s": round(signup_s, 1),
        "signup_per_user_ms": round(signup_s / max(1, n_users) * 1000, 1),
        "catch_up_s": round(catch_up_s, 1),
        "total_s": round(time.monotonic() - t, 1),
        "setup_errors": sum(
            v for c in rec.statuses.values() for st, v in c.items() if _is_error(st)
        ),
    }
    return users, titles, words, timings


def server_cpu_s(stack: Stack) -> dict[str, float]:
    """CPU seconds (user + system) used so far by `mgw up` (with its children),
    PostgreSQL and Redis. Processes that exited in between are missed (PostgreSQL
    backends are pooled, so few do)."""
    out: dict[str, float] = {}
    for group, procs in stack.processes().items():
        out[group] = 0.0
        for p in procs:
            with suppress(psutil.Error):
                c = p.cpu_times()
                out[group] += c.user + c.system
    return out


# -- one share of the users, in whichever process runs it ------------------------------


class CountingClient(load.Client):
    """A client that knows how many requests are in flight, so a step can end as soon
    as the last answer is in rather than when the last user wakes from thinking."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.inflight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def call(self, *a: Any, **kw: Any) -> tuple[int, dict[str, str], Any]:
        self.inflight += 1
        self.idle.clear()
        try:
            return await super().call(*a, **kw)
        finally:
            self.inflight -= 1
            if not self.inflight:
                self.idle.set()


async def run_share(
    base: str,
    users: list[load.User],
    titles: list[str],
    words: list[str],
    think_s: float,
    seconds: float,
    seed: int,
) -> dict[str, Any]:
    """The workload for these users for ``seconds``; raw figures to merge (latencies,
    statuses, the users as they ended, the CPU this process used meanwhile)."""
    rec = load.Recorder()
    client = CountingClient(base, rec, connections=max(16, len(users) + 8))
    cpu0, t0 = time.process_time(), time.monotonic()
    stop = asyncio.Event()
    try:
        wl = load.Workload(client, users, titles, think_s=think_s, seed=seed, words=words)
        task = asyncio.create_task(wl.run(seconds + 3600, stop))
        await asyncio.sleep(seconds)
        stop.set()
        # a user checks `stop` before each request, so after this only answers arrive;
        # the users still thinking are cancelled in their sleep (nothing is in flight)
        await client.idle.wait()
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        wall = time.monotonic() - t0
    finally:
        await client.close()
    return {
        "latencies": dict(rec.latencies),
        "statuses": {r: dict(c) for r, c in rec.statuses.items()},
        "users": users,
        # a 503 must say when to come back (Retry-After); any other 5xx is a bug
        "bad_5xx": sum(1 for _, _, st, ra in rec.failures if st >= 500 and not (st == 503 and ra)),
        "cpu_s": time.process_time() - cpu0,
        "wall_s": wall,
        "pid": os.getpid(),
    }


def _share_in_process(kw: dict[str, Any]) -> dict[str, Any]:
    return asyncio.run(run_share(**kw))


def _warm() -> int:
    return os.getpid()


def merge(shares: list[dict[str, Any]]) -> tuple[dict[str, list[float]], dict[str, Counter[int]]]:
    lat: dict[str, list[float]] = defaultdict(list)
    st: dict[str, Counter[int]] = defaultdict(Counter)
    for sh in shares:
        for route, xs in sh["latencies"].items():
            lat[route].extend(xs)
        for route, c in sh["statuses"].items():
            st[route].update({int(k): v for k, v in c.items()})
    return lat, st


def pct(xs: list[float], q: float) -> float:
    return round(load._pct(sorted(xs), q), 1)


def _is_error(status: int) -> bool:
    # 0: the connection failed; load.TIMED_OUT (negative): no answer in time
    return status <= 0 or status >= 500


def _with_timeouts(xs: list[float], statuses: Counter[int]) -> list[float]:
    """Latencies with each request that timed out counted as the timeout: a lower
    bound, but leaving them out would make a server that hangs look fast."""
    return sorted(xs + [load.REQUEST_TIMEOUT_S * 1000] * statuses.get(load.TIMED_OUT, 0))


def figures(lat: dict[str, list[float]], st: dict[str, Counter[int]], wall_s: float) -> dict:
    """Throughput, overall and per-route percentiles and status counts, error rate."""
    routes: dict[str, Any] = {}
    every: list[float] = []
    for route in sorted(set(lat) | set(st)):
        xs = _with_timeouts(lat.get(route, []), st[route])
        every.extend(xs)
        routes[route] = {
            "requests": sum(st[route].values()),
            "p50_ms": pct(xs, 50),
            "p95_ms": pct(xs, 95),
            "p99_ms": pct(xs, 99),
            "statuses": {str(k): v for k, v in sorted(st[route].items())},
        }
    requests = sum(sum(c.values()) for c in st.values())
    errors = sum(v for c in st.values() for s, v in c.items() if _is_error(s))
    ok = sum(v for c in st.values() for s, v in c.items() if 200 <= s < 300)
    return {
        "requests": requests,
        "throughput_rps": round(requests / wall_s, 1) if wall_s else 0.0,
        "ok_rps": round(ok / wall_s, 1) if wall_s else 0.0,
        "errors": errors,
        "error_rate": round(errors / requests, 5) if requests else 0.0,
        "timeouts": sum(c.get(load.TIMED_OUT, 0) for c in st.values()),
        "connection_errors": sum(c.get(0, 0) for c in st.values()),
        "http_5xx": sum(v for c in st.values() for s, v in c.items() if s >= 500),
        #: expected ones are rare (a token that expired); many means a harness bug
        "http_4xx": sum(v for c in st.values() for s, v in c.items() if 400 <= s < 500),
        "p50_ms": pct(every, 50),
        "p95_ms": pct(every, 95),
        "p99_ms": pct(every, 99),
        "max_ms": round(max(every), 1) if every else 0.0,
        "routes": routes,
    }


async def run_steps(
    stack: Stack,
    users: list[load.User],
    titles: list[str],
    words: list[str],
    steps: list[int],
    step_seconds: float,
    think_s: float,
    pool: ProcessPoolExecutor | None,
    processes: int,
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    psutil.cpu_percent()  # starts the machine-wide CPU interval
    for i, n in enumerate(steps):
        active = users[:n]
        k = max(1, min(processes, n))
        parts = [list(range(j, n, k)) for j in range(k)]
        kws = [
            {
                "base": stack.base,
                "users": [active[x] for x in part],
                "titles": titles,
                "words": words,
                "think_s": think_s,
                "seconds": step_seconds,
                "seed": 1000 * (i + 1) + j,
            }
            for j, part in enumerate(parts)
        ]
        srv0, cpu0, t0 = server_cpu_s(stack), time.process_time(), time.monotonic()
        if pool is None:
            shares = await asyncio.gather(*(run_share(**kw) for kw in kws))
        else:
            shares = await asyncio.gather(
                *(loop.run_in_executor(pool, _share_in_process, kw) for kw in kws)
            )
        span = time.monotonic() - t0
        # the requests ran for as long as the slowest share's (its last answer included)
        wall = max(sh["wall_s"] for sh in shares)
        parent_cpu = time.process_time() - cpu0
        srv1 = server_cpu_s(stack)
        srv = {g: srv1[g] - srv0.get(g, 0.0) for g in srv1}
        machine = psutil.cpu_percent()
        # the users come back from other processes as copies: keep their new tokens
        # and watchlists for the next step
        for part, sh in zip(parts, shares, strict=True):
            for x, u in zip(part, sh["users"], strict=True):
                users[x] = u
        lat, st = merge(shares)
        step = {"users": n, "seconds": round(wall, 1), "offered_rps": round(n / think_s, 1)}
        step.update(figures(lat, st, wall))
        step["http_5xx_not_503_retry_after"] = sum(sh["bad_5xx"] for sh in shares)
        per_proc = [sh["cpu_s"] / wall * 100 for sh in shares] if pool is not None else []
        client_cpu = parent_cpu + (sum(sh["cpu_s"] for sh in shares) if pool is not None else 0)
        step["client"] = {
            "processes": len(shares) if pool is not None else 0,
            "cpu_pct": round(client_cpu / span * 100, 1),
            "max_process_cpu_pct": round(max(per_proc or [parent_cpu / wall * 100]), 1),
        }
        step["client"]["saturated"] = step["client"]["max_process_cpu_pct"] > CLIENT_SATURATED_PCT
        # 100 = one core; the API and the in-process projectors share one Python process
        step["server_cpu_pct"] = round(sum(srv.values()) / span * 100, 1)
        step["server_cpu_pct_by_process"] = {g: round(v / span * 100, 1) for g, v in srv.items()}
        step["machine_cpu_pct"] = round(machine, 1)
        # what neither the server nor the generator used (other people's work on a
        # shared machine, the kernel's loopback networking): large means noisy figures
        cores = (psutil.cpu_count() or 1) * machine
        step["other_cpu_pct"] = round(
            max(0.0, cores - step["server_cpu_pct"] - step["client"]["cpu_pct"]), 1
        )
        step["loadavg"] = [round(x, 2) for x in os.getloadavg()]
        step["lag_after"] = total_lag(await ready(stack.base))
        out.append(step)
        print(
            f"step {i + 1}/{len(steps)}: {n} users {step['throughput_rps']} req/s "
            f"p50 {step['p50_ms']} p99 {step['p99_ms']} ms errors {step['errors']} "
            f"client {step['client']['cpu_pct']}% server {step['server_cpu_pct']}%",
            file=sys.stderr,
        )
    return out


def knee(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The first step whose overall p99 passes KNEE_P99_MS."""
    for i, s in enumerate(steps):
        if s["p99_ms"] > KNEE_P99_MS:
            return {"step": i, "users": s["users"], "p99_ms": s["p99_ms"]}
    return None


def route_knees(steps: list[dict[str, Any]]) -> dict[str, int | None]:
    """Per route, the users of the first step whose p99 passes KNEE_P99_MS: the overall
    p99 is one slow route's once that route has more than 1 % of the requests (a
    password sign-in is argon2 by design), so this says which route bends first."""
    out: dict[str, int | None] = {}
    for s in steps:
        for route, f in s["routes"].items():
            out.setdefault(route, None)
            if out[route] is None and f["p99_ms"] > KNEE_P99_MS:
                out[route] = s["users"]
    return dict(sorted(out.items()))


def client_pool(processes: int) -> ProcessPoolExecutor | None:
    if processes <= 0:
        return None
    # spawn, not fork: the parent runs an event loop and the stack's Popen
    return ProcessPoolExecutor(processes, mp_context=get_context("spawn"))


async def run(args: argparse.Namespace) -> dict[str, Any]:
    steps = parse_steps(args.steps, args.users)
    n_users = max(steps)
    data_dir, remove = data_dir_for(args, "mgw-load-")
    stack = Stack(data_dir, env=stack_env(), projector_processes=args.projector_processes)
    pool = client_pool(args.client_processes)
    loop = asyncio.get_running_loop()
    try:
        if pool is not None:
            # spawned now, so their start-up is not part of the first step
            await asyncio.gather(
                *(loop.run_in_executor(pool, _warm) for _ in range(args.client_processes))
            )
        load_before = [round(x, 2) for x in os.getloadavg()]
        users, titles, words, timings = await setup(
            stack, args.titles, n_users, args.signup_parallel, "load"
        )
        results = await run_steps(
            stack,
            users,
            titles,
            words,
            steps,
            args.step_seconds,
            args.think_s,
            pool,
            args.client_processes,
        )
        drain_s: float | None
        try:
            drain_s = round(await wait_caught_up(stack.base, timeout=60), 1)
        except TimeoutError:
            drain_s = None
        best = max(results, key=lambda s: s["throughput_rps"])
        return {
            "scenario": "load",
            "runtime": "embedded",
            "users": n_users,
            "steps_users": steps,
            "step_seconds": args.step_seconds,
            "think_s": args.think_s,
            "titles": len(titles),
            "client_processes": args.client_processes,
            "projector_processes": args.projector_processes,
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "setup": timings,
            "steps": results,
            "knee_p99_ms": KNEE_P99_MS,
            "knee": knee(results),
            "route_knees": route_knees(results),
            "max_throughput_rps": best["throughput_rps"],
            "requests": sum(s["requests"] for s in results),
            "errors": sum(s["errors"] for s in results),
            "drain_s": drain_s,
            "data_dir": None if remove else str(data_dir),
        }
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        await asyncio.to_thread(stack.shutdown_services)
        if remove:
            shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.chaos.loadtest", description=__doc__)
    add_arguments(p)
    result = asyncio.run(run(p.parse_args(argv)))
    print(json.dumps(result))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
