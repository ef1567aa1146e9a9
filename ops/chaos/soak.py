"""The soak: the mixed workload at a steady number of users for ``--minutes``, and what
the system holds meanwhile, sampled every ``--sample-s`` seconds:

- RSS of every process: `mgw up` with its children, PostgreSQL (the postmaster and
  every backend, summed: shared buffers count once per process that touched them, so
  PSS, which shares them out, is recorded beside it), Redis;
- open file descriptors of `mgw up` (the process itself, and with its children);
- PostgreSQL client connections (pg_stat_activity, the sampler's own excluded);
- projector lag: records appended and not yet applied (below).

Growth compares the first sample after warm-up (``--warmup`` of the run, default the
first 20 %) with the last sample under load. The targets, each a boolean in the
result:

- ``rss``: every group's RSS grew less than ``--rss-growth-pct`` (10 %);
- ``fds``: flat, i.e. the last count <= the warm-up count + max(10, 10 % of it): the
  sockets of the clients' connections come and go with the load, a leak only grows;
- ``db_connections``: flat, the last count <= the warm-up count + 2 (the pools are
  bounded; a connection opened per request or never returned only grows);
- ``lag``: bounded, no sample after warm-up above ``--max-lag`` records, and the lag
  back to 0 within 60 s of the load stopping. The lag is read from the tables /ready
  reads (log heads, watermarks) over the sampler's own connection, because under load
  /ready's lag check can run out of time (how often it did is reported, with its
  HTTP status: what a load balancer's probe would have seen);
- ``private_memory``: as ``rss`` on USS: the RSS of PostgreSQL backends grows as each
  touches more of the shared buffer pool, which is bounded (shared_buffers), not a
  leak; USS is what a process holds alone.

After the load, a last sample checks that the sockets the load held are given back
(``after_load``).

    python -m ops.chaos.soak --minutes 30 --users 100
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import psycopg

from ops.chaos import loadtest
from ops.chaos.stack import Stack

#: a "flat" count may end this much above its warm-up value (absolute, relative)
FD_SLACK = (10, 0.10)
DB_CONNECTION_SLACK = 2
#: how long the lag may take to return to 0 once the load stops
DRAIN_TIMEOUT_S = 60.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=30.0, help="length of the load")
    p.add_argument("--users", type=int, default=100, help="simulated users")
    p.add_argument(
        "--think-s", type=float, default=1.0, help="mean think time (~1 request/s per user)"
    )
    p.add_argument(
        "--sample-s",
        type=float,
        default=None,
        help="seconds between samples (default 60, or 10 for runs under 10 minutes)",
    )
    p.add_argument(
        "--warmup",
        type=float,
        default=0.2,
        help="share of the run before the baseline sample (default 0.2)",
    )
    p.add_argument("--titles", type=int, default=200, help="titles seeded into the catalog")
    p.add_argument("--rss-growth-pct", type=float, default=10.0, help="RSS growth target")
    p.add_argument(
        "--max-lag", type=int, default=5000, help="most projector lag (records) after warm-up"
    )
    loadtest.add_stack_arguments(p, in_process="in this process, beside the sampler")


# -- sampling ---------------------------------------------------------------------------


def _memory(p: psutil.Process) -> tuple[int, int, int]:
    """(RSS, PSS, USS) in bytes; RSS for all three where smaps cannot be read."""
    try:
        m = p.memory_full_info()
        return m.rss, getattr(m, "pss", m.rss), getattr(m, "uss", m.rss)
    except psutil.AccessDenied:
        rss = p.memory_info().rss
        return rss, rss, rss


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def _mb(n: int) -> float:
    return round(n / 2**20, 1)


def memory_by_group(stack: Stack) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for group, procs in stack.processes().items():
        rss = pss = uss = n = 0
        for p in procs:
            with suppress(psutil.Error):
                r, s, u = _memory(p)
                rss, pss, uss, n = rss + r, pss + s, uss + u, n + 1
        out[group] = {"processes": n, "rss_mb": _mb(rss), "pss_mb": _mb(pss), "uss_mb": _mb(uss)}
    return out


def fds(stack: Stack) -> dict[str, int | None]:
    if stack.proc is None:
        return {"mgw_up": None, "mgw_all": None}
    root = total = None
    with suppress(psutil.Error):
        up = psutil.Process(stack.proc.pid)
        root = up.num_fds()
        total = root
        for c in up.children(recursive=True):
            with suppress(psutil.Error):
                total += c.num_fds()
    return {"mgw_up": root, "mgw_all": total}


class PgCounter:
    """One connection to the embedded server (its socket is in the data dir; no TCP),
    kept open so the sampling does not itself open and close connections."""

    COUNT = (
        "SELECT count(*) FILTER (WHERE backend_type = 'client backend'),"
        " count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
    )

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self.conn: psycopg.Connection[Any] | None = None

    @property
    def conninfo(self) -> str:
        # postmaster.pid's fifth line is the socket directory: pgserver puts the socket
        # elsewhere when the data dir's path is too long for a socket name
        host = str(self.pgdata)
        with suppress(OSError, IndexError):
            host = (self.pgdata / "postmaster.pid").read_text().splitlines()[4].strip() or host
        return f"host={host} dbname=postgres user=postgres"

    def count(self) -> dict[str, int | None]:
        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            row = self.conn.execute(self.COUNT).fetchone()
            assert row is not None
            return {"client": int(row[0]), "all": int(row[1])}
        except psycopg.Error as exc:
            print(f"pg_stat_activity: {exc}", file=sys.stderr)
            self.close()
            return {"client": None, "all": None}

    def lag(self) -> int | None:
        """Projector lag read from the tables /ready reads (log heads, watermarks): the
        same figure, also while the API is too busy to answer /ready in time."""
        from projections.registry import PROJECTORS

        try:
            if self.conn is None or self.conn.closed:
                self.conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            heads = self.conn.execute("SELECT topic, partition, next_offset FROM log_heads")
            ends = {(t, p): o for t, p, o in heads.fetchall()}
            cur = self.conn.execute(
                "SELECT projector, topic, partition, next_offset FROM projection_watermarks"
            )
            marks = {(n, t, p): o for n, t, p, o in cur.fetchall()}
        except psycopg.Error as exc:
            print(f"lag: {exc}", file=sys.stderr)
            self.close()
            return None
        return sum(
            max(0, end - marks.get((proj.name, topic, p), 0))
            for proj in PROJECTORS
            for (topic, p), end in ends.items()
            if topic in proj.topics
        )

    def close(self) -> None:
        if self.conn is not None:
            with suppress(psycopg.Error):
                self.conn.close()
            self.conn = None


async def sample(
    stack: Stack, pg: PgCounter, session: aiohttp.ClientSession, t0: float
) -> dict[str, Any]:
    t = time.monotonic()
    http, body = await loadtest.ready_status(stack.base, session)
    ready_ms = (time.monotonic() - t) * 1000
    projectors = body.get("projectors")
    lags = (
        {k: v.get("lag") for k, v in projectors.items() if isinstance(v, dict)}
        if isinstance(projectors, dict)
        else {}
    )
    # psutil reads /proc and smaps: cheap, but not free with dozens of backends
    memory, fd = await asyncio.gather(
        asyncio.to_thread(memory_by_group, stack), asyncio.to_thread(fds, stack)
    )
    # one connection: its queries one after the other
    conns = await asyncio.to_thread(pg.count)
    lag_sql = await asyncio.to_thread(pg.lag)
    return {
        "t_s": round(time.monotonic() - t0, 1),
        "memory": memory,
        "fds": fd,
        "db_connections": conns,
        "ready": body.get("status"),
        "ready_http": http,
        "ready_ms": round(ready_ms, 1),
        # why the lag or a dependency is unknown: under load this is the evidence
        "ready_errors": {
            **{
                f"dependency {k}": v.get("error")
                for k, v in (body.get("dependencies") or {}).items()
                if isinstance(v, dict) and v.get("status") != "up"
            },
            **(
                {"projectors": projectors["error"]}
                if isinstance(projectors, dict) and "error" in projectors
                else {}
            ),
        },
        "lag": lag_sql,
        "ready_lag": loadtest.total_lag(body),
        "lag_by_projector": lags,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


# -- the verdict --------------------------------------------------------------------------


def _growth_pct(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not a:
        return None
    return round((b - a) / a * 100, 1)


def verdict(
    samples: list[dict[str, Any]],
    *,
    duration_s: float,
    warmup: float,
    rss_growth_pct: float,
    max_lag: int,
    drained: bool,
    after_load: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Growth from the first sample at or after warm-up to the last sample under load,
    and pass/fail against each target (module docstring)."""
    after = [s for s in samples if s["t_s"] >= warmup * duration_s] or samples[-1:]
    base, last = after[0], samples[-1]
    groups = sorted(last["memory"])
    rss = {}
    for g in groups:
        b = base["memory"].get(g, {})
        e = last["memory"][g]
        rss[g] = {
            "warm_mb": b.get("rss_mb"),
            "last_mb": e["rss_mb"],
            "max_mb": max(s["memory"].get(g, {}).get("rss_mb", 0.0) for s in after),
            "growth_pct": _growth_pct(b.get("rss_mb"), e["rss_mb"]),
            "pss_growth_pct": _growth_pct(b.get("pss_mb"), e["pss_mb"]),
            "uss_growth_pct": _growth_pct(b.get("uss_mb"), e["uss_mb"]),
        }

    def under(key: str) -> bool:
        return all(r[key] is not None and r[key] < rss_growth_pct for r in rss.values())

    def flat(key: str, sub: str, slack: int, rel: float = 0.0) -> dict[str, Any]:
        w, e = base[key][sub], last[key][sub]
        values = [s[key][sub] for s in after if s[key][sub] is not None]
        allowed = None if w is None else w + max(slack, int(w * rel))
        return {
            "warm": w,
            "last": e,
            "max": max(values) if values else None,
            "allowed": allowed,
            "flat": allowed is not None and e is not None and e <= allowed,
        }

    fd = flat("fds", "mgw_up", *FD_SLACK)
    fd_all = flat("fds", "mgw_all", *FD_SLACK)
    conns = flat("db_connections", "client", DB_CONNECTION_SLACK)
    lags = [s["lag"] for s in after]
    known = [x for x in lags if x is not None]
    half = len(after) // 2
    lag = {
        "max": max(known) if known else None,
        "unknown_samples": len(lags) - len(known),
        "max_first_half": max((x for x in lags[:half] if x is not None), default=None),
        "max_second_half": max((x for x in lags[half:] if x is not None), default=None),
        "limit": max_lag,
        "drained": drained,
    }
    lag["bounded"] = (
        bool(known) and lag["max"] <= max_lag and drained and not lag["unknown_samples"]
    )
    # with the clients gone, the sockets the load held are given back: compared with
    # the first sample, taken as the first users start
    released = None
    if after_load is not None:
        first = samples[0]
        f0, f1 = first["fds"]["mgw_up"], after_load["fds"]["mgw_up"]
        c0, c1 = first["db_connections"]["client"], after_load["db_connections"]["client"]
        released = {
            "fds_start": f0,
            "fds_after": f1,
            "db_connections_start": c0,
            "db_connections_after": c1,
            # the pools keep connections they opened under load until max_idle: those
            # are bounded by the flat check above, not expected back here
            "released": None not in (f0, f1) and f1 <= f0 + max(FD_SLACK[0], int(f0 * FD_SLACK[1])),
        }
    # not a soak target, but what a load balancer's probe would have seen
    ready = {
        "samples": len(samples),
        "not_200": sum(1 for s in samples if s.get("ready_http") != 200),
        "lag_unknown": sum(1 for s in samples if s.get("ready_lag") is None),
        "max_ms": max((s.get("ready_ms", 0.0) for s in samples), default=None),
        "errors": sorted({e for s in samples for e in s.get("ready_errors", {}).values() if e}),
    }
    return {
        "baseline_t_s": base["t_s"],
        "last_t_s": last["t_s"],
        "rss": rss,
        "fds": fd,
        "fds_with_children": fd_all,
        "db_connections": conns,
        "lag": lag,
        "after_load": released,
        "ready_under_load": ready,
        "pass": {
            "rss": under("growth_pct"),
            # RSS of PostgreSQL backends grows as each touches more of the shared buffer
            # pool (bounded by shared_buffers, not a leak); USS is each process's own
            "private_memory": under("uss_growth_pct"),
            "fds": fd["flat"] and fd_all["flat"],
            "db_connections": conns["flat"],
            "lag": lag["bounded"],
        },
    }


# -- the run ------------------------------------------------------------------------------


async def _sampler(
    stack: Stack, pg: PgCounter, every: float, t0: float, out: list[dict[str, Any]]
) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        n = 0
        while True:
            out.append(await sample(stack, pg, session, t0))
            n += 1
            # on a fixed grid from t0, so a slow sample does not shift the rest
            await asyncio.sleep(max(0.0, t0 + n * every - time.monotonic()))


async def drain(base: str) -> tuple[bool, float | None]:
    try:
        return True, round(await loadtest.wait_caught_up(base, timeout=DRAIN_TIMEOUT_S), 1)
    except TimeoutError:
        return False, None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.minutes * 60
    every = args.sample_s or (60.0 if args.minutes >= 10 else 10.0)
    data_dir, remove = loadtest.data_dir_for(args, "mgw-soak-")
    # the workload signs each user in about every 100 requests, at random: over a long
    # soak some user would go 15 minutes without and see 401s for the rest of it
    ttl = str(int(max(900, 2 * seconds + 600)))
    stack = Stack(
        data_dir,
        env=loadtest.stack_env(MGW_ACCESS_TOKEN_TTL_S=ttl),
        projector_processes=args.projector_processes,
    )
    pool = loadtest.client_pool(args.client_processes)
    pg = PgCounter(stack.pgdata)
    loop = asyncio.get_running_loop()
    samples: list[dict[str, Any]] = []
    try:
        if pool is not None:
            await loop.run_in_executor(pool, loadtest._warm)
        load_before = [round(x, 2) for x in os.getloadavg()]
        users, titles, words, timings = await loadtest.setup(
            stack, args.titles, args.users, args.signup_parallel, "soak"
        )
        k = max(1, min(args.client_processes, len(users)))
        kws = [
            {
                "base": stack.base,
                "users": users[j::k],
                "titles": titles,
                "words": words,
                "think_s": args.think_s,
                "seconds": seconds,
                "seed": 77 + j,
            }
            for j in range(k)
        ]
        t0 = time.monotonic()
        sampler = asyncio.create_task(_sampler(stack, pg, every, t0, samples))
        cpu0 = time.process_time()
        try:
            if pool is None:
                shares = await asyncio.gather(*(loadtest.run_share(**kw) for kw in kws))
            else:
                shares = await asyncio.gather(
                    *(loop.run_in_executor(pool, loadtest._share_in_process, kw) for kw in kws)
                )
        finally:
            sampler.cancel()
            with suppress(asyncio.CancelledError):
                await sampler
        wall = time.monotonic() - t0
        # once the clients have gone: what the load held should be given back (sockets,
        # connections), and what it appended applied
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            after_load = await sample(stack, pg, session, t0)
        drained, drain_s = await drain(stack.base)
        final_lag = loadtest.total_lag(await loadtest.ready(stack.base))
        lat, st = loadtest.merge(shares)
        figures = loadtest.figures(lat, st, wall)
        client_cpu = (
            time.process_time()
            - cpu0
            + (sum(sh["cpu_s"] for sh in shares) if pool is not None else 0.0)
        )
        return {
            "scenario": "soak",
            "runtime": "embedded",
            "minutes": args.minutes,
            "users": args.users,
            "think_s": args.think_s,
            "sample_s": every,
            "warmup": args.warmup,
            "client_processes": args.client_processes,
            "projector_processes": args.projector_processes,
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "setup": timings,
            "load": {
                **{k: v for k, v in figures.items() if k != "routes"},
                "http_5xx_not_503_retry_after": sum(sh["bad_5xx"] for sh in shares),
                "seconds": round(wall, 1),
                "client_cpu_pct": round(client_cpu / wall * 100, 1),
                "routes": figures["routes"],
            },
            "errors": figures["errors"],
            "drain_s": drain_s,
            "final_lag": final_lag,
            "growth": verdict(
                samples,
                duration_s=wall,
                warmup=args.warmup,
                rss_growth_pct=args.rss_growth_pct,
                max_lag=args.max_lag,
                drained=drained,
                after_load=after_load,
            ),
            "samples": samples,
            "after_load": after_load,
            "data_dir": None if remove else str(data_dir),
        }
    finally:
        pg.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        await asyncio.to_thread(stack.shutdown_services)
        if remove:
            shutil.rmtree(data_dir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ops.chaos.soak", description=__doc__)
    add_arguments(p)
    result = asyncio.run(run(p.parse_args(argv)))
    print(json.dumps(result))
    ok = result["errors"] == 0 and all(result["growth"]["pass"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
