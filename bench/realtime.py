"""Realtime benchmark: 1,000 WebSockets on one API process, pushes, remote commands, and
the polling client they replace.

    python bench/realtime.py [--users 200] [--devices 5] [--probes 2000] [--bursts 5]
                             [--writes 200] [--commands 200] [--polls 40]

The API runs as its own process (``mgw up`` on fresh embedded PostgreSQL and Redis, the
embedded log, every projector in-process), so the clients below share no interpreter
with it. ``--users`` accounts each open ``--devices`` sockets (default 1,000 in all).

* fan-out: probes published on the users' Redis channels (as a projector's push is,
  core/fanout.py), each stamped with its send time; receipt is when the socket's client
  has read it. Steady: one probe every 5 ms to one user (all its sockets); burst: one
  probe to every user at once (1,000 frames leaving one process together).
* end to end: ``--writes`` watchlist adds through REST, each timed from the request to
  the library frame on every other socket of that user (log append, projector,
  publish, hub).
* commands: ``--commands`` remote commands, one at a time: POST from one device, the
  target device acks the command frame, done when the sender's socket hears
  ``command.status: acked`` (and a GET with the consistency token agrees).
* memory: the API process's resident memory before and after the sockets opened.
* baseline in the same run: a device polling ``GET /v1/sync?since=`` every second, timed
  from each write to the poll that first returns it (``--polls`` writes).

Targets (issue 15): publish-to-receipt p99 <= 250 ms at 1,000 sockets; command round trip
p95 <= 200 ms. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bench._stack import embedded_settings  # noqa: E402
from core.fanout import channel  # noqa: E402
from domain.catalog.webhooks import sign  # noqa: E402

PASSWORD = "quiet rivers carry old stones"
SECRET = "bench-webhook-secret"
TITLES = 50


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))], 2)


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50_ms": _pct(values, 50),
        "p95_ms": _pct(values, 95),
        "p99_ms": _pct(values, 99),
        "max_ms": round(max(values), 2) if values else float("nan"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rss_kib(pid: int) -> int:
    """Resident memory of the API process and its children (the shard processes)."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    return total


class Device:
    """One socket and what it has read, by frame type."""

    def __init__(self, user: int, name: str, ws: ClientConnection) -> None:
        self.user, self.name, self.ws = user, name, ws
        self.waiters: dict[tuple[str, str], asyncio.Future[float]] = {}
        self.commands: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.probe_latencies: list[float] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            now = time.time()
            frame = json.loads(raw)
            kind = frame["type"]
            if kind == "probe":
                self.probe_latencies.append((now - frame["sent"]) * 1000)
                key = ("probe", frame["id"])
            elif kind == "library":
                for c in frame["changes"]:
                    self._resolve(("library", c.get("content_id", "")), now)
                continue
            elif kind == "command":
                await self.commands.put(frame)
                continue
            elif kind == "command.status":
                key = ("command." + frame["status"], frame["command_id"])
            else:
                continue
            self._resolve(key, now)

    def _resolve(self, key: tuple[str, str], now: float) -> None:
        fut = self.waiters.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_result(now)

    def expect(self, kind: str, ident: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters[(kind, ident)] = fut
        return fut


async def _accounts(http: httpx.AsyncClient, n: int) -> list[tuple[str, str]]:
    sem = asyncio.Semaphore(8)

    async def one(i: int) -> tuple[str, str]:
        email = f"rt{i}.{uuid.uuid4().hex[:6]}@example.com"
        async with sem:
            r = await http.post(
                "/v1/auth/register",
                json={"email": email, "password": PASSWORD, "display_name": f"Viewer {i}"},
            )
            r.raise_for_status()
            t = await http.post(
                "/oauth/token",
                data={
                    "grant_type": "password",
                    "client_id": "mgw-app",
                    "username": email,
                    "password": PASSWORD,
                },
            )
            t.raise_for_status()
        return str(r.json()["id"]), str(t.json()["access_token"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def _seed_titles(http: httpx.AsyncClient, dsn: str) -> list[str]:
    titles = [
        {
            "netflixId": 900_000 + i, "type": "movie", "title": f"Realtime Bench {i}",
            "releaseYear": 2001 + i % 20, "runtimeMinutes": 95, "genres": ["Dramas"],
            "imdbId": f"tt9{i:06d}",
            "availability": [{"country": "US", "plan": "standard", "maxQuality": "HD",
                              "startDate": "2020-01-01"}],
        }
        for i in range(TITLES)
    ]  # fmt: skip
    raw = json.dumps({"titles": titles}).encode()
    ts = int(time.time())
    r = await http.post(
        "/v1/webhooks/netflix",
        content=raw,
        headers={
            "content-type": "application/json",
            "X-MGW-Timestamp": str(ts),
            "X-MGW-Signature": sign(SECRET, ts, raw),
            "X-MGW-Delivery": uuid.uuid4().hex,
        },
    )
    r.raise_for_status()
    import psycopg

    deadline = time.monotonic() + 120
    while True:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            cur = await conn.execute(
                "SELECT content_id FROM content WHERE title LIKE 'Realtime Bench %'"
            )
            ids = [r[0] for r in await cur.fetchall()]
        if len(ids) >= TITLES:
            return ids
        if time.monotonic() > deadline:
            raise SystemExit(f"titles not projected: {len(ids)} of {TITLES}")
        await asyncio.sleep(0.2)


async def run(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "MGW_DATA_DIR": str(settings.data_dir),
        "MGW_EMBEDDINGS": "none",
        "MGW_SEARCH_INDEXER": "false",
        "MGW_RECS_TRAINING": "false",
        "MGW_BATCH_LINGER_MS": "0",
        "MGW_WEBHOOK_SECRET": SECRET,
        "MGW_ARGON2_TIME_COST": "1",
        "MGW_ARGON2_MEMORY_KIB": "8192",
        "MGW_RATE_LIMITS": ",".join(
            f"{r}=1000000/60" for r in ("login", "register", "token", "mfa", "device")
        ),
        "MGW_LOG_LEVEL": "WARNING",
    }
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mgw.cli", "up", "--port", str(port),
        cwd=ROOT, env=env, start_new_session=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            deadline = time.monotonic() + 180
            while True:
                try:
                    if (await http.get("/ready")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.returncode is not None or time.monotonic() > deadline:
                    raise SystemExit("the API did not become ready")
                await asyncio.sleep(0.3)
            return await _measure(args, http, base, settings, server.pid)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(server.wait(), 60)
        except TimeoutError:
            server.kill()


async def _measure(
    args: argparse.Namespace, http: httpx.AsyncClient, base: str, settings: Any, pid: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"users": args.users, "devices_per_user": args.devices}
    titles = await _seed_titles(http, settings.database_url)
    _log(f"accounts: {args.users}")
    accounts = await _accounts(http, args.users)
    _user_ids[:] = [a[0] for a in accounts]
    tokens = [a[1] for a in accounts]
    rss_before = _rss_kib(pid)

    ws_base = base.replace("http://", "ws://")
    devices: list[list[Device]] = [[] for _ in tokens]
    started = time.perf_counter()

    async def open_one(u: int, d: int) -> None:
        ws = await connect(
            f"{ws_base}/v1/ws?device_id=dev{d}",
            subprotocols=["bearer", tokens[u]],  # type: ignore[list-item]
            max_queue=None,
            open_timeout=60,
        )
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello
        devices[u].append(Device(u, f"dev{d}", ws))

    sem = asyncio.Semaphore(50)

    async def guarded(u: int, d: int) -> None:
        async with sem:
            await open_one(u, d)

    await asyncio.gather(*(guarded(u, d) for u in range(args.users) for d in range(args.devices)))
    sockets = sum(len(d) for d in devices)
    result["sockets"] = sockets
    result["connect_s"] = round(time.perf_counter() - started, 2)
    await asyncio.sleep(2)  # let presence writes and subscriptions settle
    rss_after = _rss_kib(pid)
    result["api_rss_mib_before"] = round(rss_before / 1024, 1)
    result["api_rss_mib_with_sockets"] = round(rss_after / 1024, 1)
    result["memory_per_socket_kib"] = round((rss_after - rss_before) / max(1, sockets), 1)
    _log(f"{sockets} sockets open in {result['connect_s']} s")

    redis = aioredis.from_url(settings.redis_url)
    try:
        result["fanout_steady"] = await _steady(args, redis, devices)
        result["fanout_burst"] = await _burst(args, redis, devices)
        result["end_to_end_write"] = await _writes(args, http, tokens, titles, devices)
        result["command_round_trip"] = await _commands(args, http, tokens, devices)
        result["baseline_poll_1s"] = await _polling(args, http, tokens, titles)
    finally:
        await redis.aclose()
        for ds in devices:
            for d in ds:
                await d.ws.close()
                d.task.cancel()

    p99 = result["fanout_burst"]["p99_ms"]
    steady99 = result["fanout_steady"]["p99_ms"]
    result["target_publish_to_receipt_p99_ms"] = 250
    result["publish_to_receipt_target_met"] = max(p99, steady99) <= 250
    result["target_command_round_trip_p95_ms"] = 200
    result["command_target_met"] = result["command_round_trip"]["p95_ms"] <= 200
    return result


async def _probe(redis: Any, user: int, ident: str) -> None:
    await redis.publish(
        channel(_user_ids[user]), json.dumps({"type": "probe", "id": ident, "sent": time.time()})
    )


_user_ids: list[str] = []


async def _steady(args: argparse.Namespace, redis: Any, devices: list[list[Device]]) -> Any:
    waits: list[asyncio.Future[float]] = []
    sent: list[float] = []
    began = time.perf_counter()
    for i in range(args.probes):
        u = random.randrange(len(devices))
        ident = f"s{i}"
        for d in devices[u]:
            waits.append(d.expect("probe", ident))
        t = time.time()
        await _probe(redis, u, ident)
        sent.extend([t] * len(devices[u]))
        await asyncio.sleep(0.005)
    got = await asyncio.wait_for(asyncio.gather(*waits), 60)
    lat = [(g - s) * 1000 for g, s in zip(got, sent, strict=True)]
    out = _stats(lat)
    elapsed = time.perf_counter() - began
    out["probes_per_s"] = round(args.probes / elapsed, 1)
    out["frames_per_s"] = round(len(lat) / elapsed, 1)
    _log(f"fan-out steady: {out}")
    return out


async def _burst(args: argparse.Namespace, redis: Any, devices: list[list[Device]]) -> Any:
    lat: list[float] = []
    for b in range(args.bursts):
        ident = f"b{b}"
        waits = [d.expect("probe", ident) for ds in devices for d in ds]
        t = time.time()
        pipe = redis.pipeline(transaction=False)
        for u in range(len(devices)):
            pipe.publish(
                channel(_user_ids[u]), json.dumps({"type": "probe", "id": ident, "sent": t})
            )
        await pipe.execute()
        got = await asyncio.wait_for(asyncio.gather(*waits), 60)
        lat += [(g - t) * 1000 for g in got]
        await asyncio.sleep(0.5)
    out = _stats(lat)
    out["frames_per_burst"] = sum(len(ds) for ds in devices)
    _log(f"fan-out burst: {out}")
    return out


async def _writes(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    tokens: list[str],
    titles: list[str],
    devices: list[list[Device]],
) -> Any:
    lat: list[float] = []
    for i in range(args.writes):
        u = random.randrange(len(tokens))
        content = titles[i % len(titles)]
        others = devices[u][1:]
        waits = [d.expect("library", content) for d in others]
        # alternate add and remove, so every write is a change the feed records
        t = time.time()
        if (i // len(titles)) % 2 == 0:
            r = await http.post(
                "/v1/me/watchlist",
                json={"content_id": content},
                headers={"Authorization": f"Bearer {tokens[u]}", "X-Device-Id": "dev0"},
            )
        else:
            r = await http.delete(
                f"/v1/me/watchlist/{content}",
                headers={"Authorization": f"Bearer {tokens[u]}", "X-Device-Id": "dev0"},
            )
        r.raise_for_status()
        got = await asyncio.wait_for(asyncio.gather(*waits), 30)
        lat += [(g - t) * 1000 for g in got]
    out = _stats(lat)
    _log(f"write -> other devices: {out}")
    return out


async def _commands(
    args: argparse.Namespace,
    http: httpx.AsyncClient,
    tokens: list[str],
    devices: list[list[Device]],
) -> Any:
    lat: list[float] = []
    checked = 0
    for i in range(args.commands):
        u = random.randrange(len(tokens))
        remote, target = devices[u][0], devices[u][1]
        t = time.time()
        r = await http.post(
            f"/v1/me/devices/{target.name}/commands",
            json={"command": "seek", "position_s": float(i)},
            headers={"Authorization": f"Bearer {tokens[u]}"},
        )
        assert r.status_code == 202, r.text
        cid = r.json()["command_id"]
        acked = remote.expect("command.acked", cid)
        cmd = await asyncio.wait_for(target.commands.get(), 30)
        assert cmd["command_id"] == cid, cmd
        await target.ws.send(json.dumps({"type": "ack", "command_id": cid}))
        done = await asyncio.wait_for(acked, 30)
        lat.append((done - t) * 1000)
        if i % 20 == 0:  # the read model agrees with what the socket said
            g = await http.get(
                f"/v1/me/commands/{cid}",
                headers={
                    "Authorization": f"Bearer {tokens[u]}",
                    "X-Consistency-Token": r.headers["X-Consistency-Token"],
                },
            )
            assert g.json()["status"] in ("acked", "delivered"), g.text
            checked += 1
    out = _stats(lat)
    out["status_reads_checked"] = checked
    _log(f"command round trip: {out}")
    return out


async def _polling(
    args: argparse.Namespace, http: httpx.AsyncClient, tokens: list[str], titles: list[str]
) -> Any:
    """A device without a socket: GET /v1/sync?since= every second."""
    h = {"Authorization": f"Bearer {tokens[0]}"}
    cursor = (await http.get("/v1/sync", headers=h)).json()["cursor"]
    seen: dict[str, float] = {}
    arrived: dict[str, asyncio.Event] = {}
    stop = asyncio.Event()
    request_ms: list[float] = []

    async def poll() -> None:
        nonlocal cursor
        while not stop.is_set():
            t0 = time.perf_counter()
            r = (await http.get("/v1/sync", params={"since": cursor}, headers=h)).json()
            request_ms.append((time.perf_counter() - t0) * 1000)
            now = time.time()
            cursor = r["cursor"]
            for c in r["changes"]:
                key = c.get("content_id", "")
                seen.setdefault(key, now)
                arrived.setdefault(key, asyncio.Event()).set()
            await asyncio.sleep(1.0)

    poller = asyncio.create_task(poll())
    lat: list[float] = []
    rated = random.sample(titles, min(args.polls, len(titles)))
    for content in rated:
        await asyncio.sleep(random.uniform(0.1, 1.0))  # writes land at any phase of the poll
        t = time.time()
        r = await http.put(f"/v1/me/ratings/{content}", json={"rating": 7}, headers=h)
        r.raise_for_status()
        await asyncio.wait_for(arrived.setdefault(content, asyncio.Event()).wait(), 10)
        lat.append((seen[content] - t) * 1000)
    stop.set()
    await poller
    out = _stats(lat)
    out["poll_request_p50_ms"] = _pct(request_ms, 50)
    _log(f"baseline, polling every second: {out}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--devices", type=int, default=5, help="sockets per user (at least 2)")
    ap.add_argument("--probes", type=int, default=2000)
    ap.add_argument("--bursts", type=int, default=5)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--commands", type=int, default=200)
    ap.add_argument("--polls", type=int, default=40)
    args = ap.parse_args()
    if args.devices < 2:
        ap.error("--devices must be at least 2 (one sends, another hears)")
    with embedded_settings("mgw-bench-realtime-") as settings:
        result = asyncio.run(run(args, settings))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
