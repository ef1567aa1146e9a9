"""The write path: playback reports acknowledged per second by `mgw up`, against the
simplest app that could take them, in one run on this machine.

    python bench/write_path.py [--seconds 20] [--clients 64,256] [--runtimes embedded,kafka]

One PostgreSQL and one Redis (embedded) serve the whole run. On them:

* floor: bench/write_floor.py on uvicorn, a separate process: parse the JSON, one
  INSERT and one commit per request, 202.
* embedded: `mgw up` (a separate process group, projectors running) on the embedded
  log, in its own database.
* kafka: `mgw up` with KAFKA_BOOTSTRAP_SERVERS on a local KRaft broker, in a database
  of its own.

For each concurrency, ``--clients`` clients (one asyncio process, aiohttp, one request at
a time each) POST /v1/playback/events for ``--warmup`` seconds unrecorded, then
``--seconds`` recorded: the floor first, then the runtime. Clients are spread over
``--users`` signed-in users (several devices per user, as households are) and each
report moves its device's position on. Every 202 is an acknowledged, durable write.
Before the loads, one idle client sends reports one after another to each: the latency
of a write when alone.

Each runtime's loads are compared with the floor measured just before them with that
runtime's services up (an idle broker takes CPU too): ``ratio_to_floor``. The first
floor of the run (embedded's, with no broker yet) gives ``ratio_to_first_floor``.
The CPU each part used in the recorded window is given in cores: the client, the server
under test, PostgreSQL, Redis and the broker.

The last line is one JSON object: per runtime, the floor's and mgw's writes/s, p50, p99,
errors and CPU per concurrency, the ratios, and the idle client's latencies.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import psutil
import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from projection_throughput import create_db  # noqa: E402  (bench/ is the script's dir)

from mgw import embedded  # noqa: E402
from ops.chaos.load import Client, Recorder, User  # noqa: E402
from ops.chaos.stack import Stack, free_port  # noqa: E402

PATH = "/v1/playback/events"


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds(server_pid: int) -> dict[str, float]:
    """CPU seconds used so far by each part: this client, the server under test (its
    process tree), PostgreSQL, Redis and the Kafka broker."""
    out = {"client": 0.0, "server": 0.0, "postgres": 0.0, "redis": 0.0, "kafka": 0.0}
    server: set[int] = set()
    with suppress(psutil.Error):
        root = psutil.Process(server_pid)
        server = {root.pid, *(c.pid for c in root.children(recursive=True))}
    for proc in psutil.process_iter(["name", "pid"]):
        with suppress(psutil.Error):
            name = proc.info["name"] or ""
            if proc.pid == os.getpid():
                part = "client"
            elif proc.pid in server:
                part = "server"
            elif name == "postgres":
                part = "postgres"
            elif name == "redis-server":
                part = "redis"
            elif name == "java":
                part = "kafka"
            else:
                continue
            t = proc.cpu_times()
            out[part] += t.user + t.system
    return out


def applied(dsn: str) -> int:
    """Playback reports folded into the playback projection so far."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT coalesce(sum(event_count), 0) FROM playback_positions")
        return int(row.fetchone()[0])  # type: ignore[index]


def catch_up(dsn: str, before: int, acked: int, timeout: float = 300) -> dict[str, Any]:
    """How much of what was acknowledged the projection held when the load stopped, and
    how long it took to hold all of it."""
    t0 = time.monotonic()
    at_end = applied(dsn) - before
    now = at_end
    while now < acked and time.monotonic() - t0 < timeout:
        time.sleep(0.2)
        now = applied(dsn) - before
    return {
        "applied_when_load_stopped": round(at_end / max(acked, 1), 3),
        "catch_up_s": round(time.monotonic() - t0, 1) if now >= acked else None,
    }


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q / 100))]


async def drive(
    base: str, users: list[User], clients: int, seconds: float, warmup: float, server_pid: int
) -> dict[str, Any]:
    """``clients`` loops, each one request at a time; only the window after the warm-up
    counts (and the CPU each part used in it, in cores)."""
    lat: list[float] = []
    errors: dict[str, int] = {}
    ok = 0
    acked = 0  # every 202, warm-up included
    t_start = time.monotonic()
    t_rec = t_start + warmup
    t_end = t_rec + seconds
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(
        base_url=base, connector=aiohttp.TCPConnector(limit=clients + 8), timeout=timeout
    ) as session:

        async def loop(i: int) -> None:
            nonlocal ok, acked
            user = users[i % len(users)]
            headers = {**user.headers, "Content-Type": "application/json"}
            device, content = f"dev-{i}", f"title-{i % 97}"
            n = 0
            while (now := time.monotonic()) < t_end:
                # a position that moves on and stays inside the title's duration
                n += 1
                pos = 60.0 + (n * 10) % 7000
                body = json.dumps(
                    {
                        "content_id": content,
                        "device_id": device,
                        "kind": "progress",
                        "position_s": pos,
                        "duration_s": 7200.0,
                    }  # fmt: skip
                )
                try:
                    async with session.post(PATH, data=body, headers=headers) as r:
                        await r.read()
                        status = r.status
                except TimeoutError:
                    status = -1
                except aiohttp.ClientError as exc:
                    status = 0
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                done = time.monotonic()
                if status == 202:
                    acked += 1
                if now < t_rec or done > t_end:
                    continue
                if status == 202:
                    ok += 1
                    lat.append((done - now) * 1000)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        async def cpu_window() -> dict[str, float]:
            await asyncio.sleep(max(0.0, t_rec - time.monotonic()))
            before = cpu_seconds(server_pid)
            await asyncio.sleep(max(0.0, t_end - time.monotonic()))
            after = cpu_seconds(server_pid)
            return {k: round((after[k] - before[k]) / seconds, 2) for k in after}

        cpu, *_ = await asyncio.gather(cpu_window(), *(loop(i) for i in range(clients)))
    return {
        "clients": clients,
        "writes_per_s": round(ok / seconds, 1),
        "p50_ms": round(pct(lat, 50), 1),
        "p99_ms": round(pct(lat, 99), 1),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "cpu_cores": cpu,
        "acked_total": acked,
    }


async def idle(base: str, user: User, n: int) -> dict[str, float]:
    """One client alone: n reports one after another (after 20 unrecorded)."""
    lat: list[float] = []
    headers = {**user.headers, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(base_url=base) as session:
        for i in range(n + 20):
            body = json.dumps(
                {
                    "content_id": "title-idle",
                    "device_id": "dev-idle",
                    "kind": "progress",
                    "position_s": 60.0 + i,
                    "duration_s": 7200.0,
                }  # fmt: skip
            )
            t = time.monotonic()
            async with session.post(PATH, data=body, headers=headers) as r:
                await r.read()
                if r.status != 202:
                    raise RuntimeError(f"idle report answered {r.status}")
            if i >= 20:
                lat.append((time.monotonic() - t) * 1000)
    return {"p50_ms": round(pct(lat, 50), 2), "p99_ms": round(pct(lat, 99), 2)}


async def sign_up(base: str, n: int) -> list[User]:
    client = Client(base, Recorder())
    try:
        return await client.sign_up("writer", n, parallel=4)
    finally:
        await client.close()


def start_floor(dsn: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(workdir / "floor.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "bench.write_floor:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],  # fmt: skip
        cwd=ROOT,
        env={**os.environ, "WRITE_FLOOR_DSN": dsn, "PYTHONPATH": str(ROOT)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the floor app exited; see {workdir}/floor.log")
        with suppress(httpx.HTTPError):
            httpx.post(f"{base}{PATH}", content=b"{}", timeout=2)
            return proc, base
        time.sleep(0.1)
    raise TimeoutError("the floor app did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="recorded seconds per load")
    ap.add_argument("--warmup", type=float, default=3.0, help="unrecorded seconds first")
    ap.add_argument("--clients", default="64,256", help="concurrencies, comma-separated")
    ap.add_argument("--users", type=int, default=64, help="signed-in users the clients share")
    ap.add_argument("--runtimes", default="embedded,kafka", help="embedded, kafka or both")
    ap.add_argument("--idle", type=int, default=300, help="reports sent by the idle client")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    concurrency = [int(c) for c in args.clients.split(",") if c]
    runtimes = [r for r in args.runtimes.split(",") if r]

    work = Path(tempfile.mkdtemp(prefix="mgw-bench-write-"))
    out: dict[str, Any] = {"seconds": args.seconds, "users": args.users}
    with ExitStack() as stack:
        if not args.keep:
            import shutil

            stack.callback(shutil.rmtree, work, ignore_errors=True)
        pg = embedded.start_postgres(work)
        stack.callback(pg.stop)
        rd = embedded.start_redis(work)
        stack.callback(rd.stop)
        floor_dsn = create_db(pg.uri, "bench_floor")
        floor, floor_base = start_floor(floor_dsn, work)
        stack.callback(floor.kill)

        quiet_floor: dict[int, dict[str, Any]] = {}
        for runtime in runtimes:
            env = {
                "DATABASE_URL": create_db(pg.uri, f"bench_{runtime}"),
                "REDIS_URL": f"unix://{rd.server.socket_file}",
            }
            if runtime == "kafka":
                from tests.kafka_broker import start_broker

                broker = start_broker(work / "kafka")
                stack.callback(broker.stop)
                env["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap
            say(f"{runtime}: starting mgw up")
            app = Stack(work / runtime, env=env)
            app.start()
            assert app.proc is not None
            part: dict[str, Any] = {"floor": {}, "mgw": {}}
            try:
                users = asyncio.run(sign_up(app.base, args.users))
                part["idle"] = {
                    "floor": asyncio.run(idle(floor_base, users[0], args.idle)),
                    "mgw": asyncio.run(idle(app.base, users[0], args.idle)),
                }
                say(f"{runtime} idle: {part['idle']}")
                for c in concurrency:
                    # the floor under the same conditions: this runtime's services up
                    floor_r = asyncio.run(
                        drive(floor_base, users, c, args.seconds, args.warmup, floor.pid)
                    )
                    quiet_floor.setdefault(c, floor_r)
                    before = applied(env["DATABASE_URL"])
                    r = asyncio.run(
                        drive(app.base, users, c, args.seconds, args.warmup, app.proc.pid)
                    )
                    r.update(catch_up(env["DATABASE_URL"], before, r["acked_total"]))
                    r["ratio_to_floor"] = round(r["writes_per_s"] / floor_r["writes_per_s"], 3)
                    r["ratio_to_first_floor"] = round(
                        r["writes_per_s"] / quiet_floor[c]["writes_per_s"], 3
                    )
                    part["floor"][str(c)] = floor_r
                    part["mgw"][str(c)] = r
                    say(f"{runtime} {c}: floor {floor_r}")
                    say(f"{runtime} {c}: mgw {r}")
            finally:
                app.stop()
            out[runtime] = part
        out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
