"""Simulated users over real HTTP, and the ledger of what the API acknowledged.

Each user runs one request at a time, like a device: reports playback progress, adds
and removes watchlist titles, reads continue-watching and the watchlist, searches and
now and then signs in again. Every write is recorded before it is sent (attempted) and
again when it is answered 2xx (acknowledged), with the consistency token, so the checks
afterwards know what must be visible and what may be (a write whose answer was lost
may or may not have been applied: Jepsen's "indeterminate").
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import gzip
import random
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

PASSWORD = "chaos-harness-passphrase-7"
ADMIN_EMAIL = "chaos-admin@example.com"
#: positions climb from START_S in small steps, well inside DURATION_S: past the
#: resume threshold (5 %) and short of "watched", so every title stays in continue-watching
DURATION_S = 7_200.0
START_S = 600.0
#: the client gives up on a request after this long: a hang counts as an error
REQUEST_TIMEOUT_S = 10.0

#: the status recorded for a request with no answer within REQUEST_TIMEOUT_S
TIMED_OUT = -1

WRITE_ROUTES = ("playback", "watch_add", "watch_remove", "signin")


@dataclass
class PlaybackKey:
    attempted: set[float] = field(default_factory=set)
    acked: float | None = None


@dataclass
class WatchKey:
    #: None (not tried), "acked" or "unknown" (sent, no 2xx seen)
    add: str | None = None
    remove: str | None = None


@dataclass
class User:
    email: str
    token: str
    user_id: str = ""
    #: the last consistency token a write returned
    consistency: str | None = None
    n: int = 0
    watch_acked: list[str] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@dataclass
class Ledger:
    playback: dict[tuple[str, str], PlaybackKey] = field(
        default_factory=lambda: defaultdict(PlaybackKey)
    )
    watch: dict[tuple[str, str], WatchKey] = field(default_factory=lambda: defaultdict(WatchKey))
    signins: Counter[str] = field(default_factory=Counter)
    #: writes answered 2xx, per route
    acked: Counter[str] = field(default_factory=Counter)

    def acked_writes(self) -> int:
        return sum(self.acked.values())


@dataclass
class Recorder:
    """Per route: latencies of answered requests, status counts, and every 5xx with when."""

    t0: float = field(default_factory=time.monotonic)
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    statuses: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    #: (seconds since t0, route, status, has Retry-After); status 0 = no answer in time
    failures: list[tuple[float, str, int, bool]] = field(default_factory=list)
    #: connection-level failures by route and kind (refused, disconnected, ...)
    client_errors: Counter[str] = field(default_factory=Counter)
    #: (seconds since t0, route, ok) of every request, for recovery times
    timeline: list[tuple[float, str, bool]] = field(default_factory=list)

    def record(self, route: str, status: int, ms: float, retry_after: bool) -> None:
        now = time.monotonic() - self.t0
        self.statuses[route][status] += 1
        if status > 0:
            self.latencies[route].append(ms)
        ok = 200 <= status < 300
        self.timeline.append((now, route, ok))
        if status >= 500 or status <= 0:
            self.failures.append((now, route, status, retry_after))

    def summary(self) -> dict[str, Any]:
        routes: dict[str, Any] = {}
        for route, lat in sorted(self.latencies.items()):
            xs = sorted(lat)
            routes[route] = {
                "requests": sum(self.statuses[route].values()),
                "p50_ms": round(_pct(xs, 50), 1),
                "p95_ms": round(_pct(xs, 95), 1),
                "p99_ms": round(_pct(xs, 99), 1),
                "statuses": {str(k): v for k, v in sorted(self.statuses[route].items())},
            }
        total = sum(sum(c.values()) for c in self.statuses.values())
        errors = sum(v for c in self.statuses.values() for s, v in c.items() if s <= 0 or s >= 500)
        return {
            "requests": total,
            "errors": errors,
            "routes": routes,
            "client_errors": dict(self.client_errors),
        }


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return 0.0
    return xs[min(len(xs) - 1, int(len(xs) * q / 100))]


def title_rows(n: int) -> list[dict[str, Any]]:
    """Real titles for the seed catalog (the demo's MovieLens file, shipped with mgw)."""
    from mgw import demo

    rows: list[dict[str, Any]] = []
    with gzip.open(demo.DATA, "rt", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            title, year = demo.split_title(row["title"])
            rows.append(
                {
                    "content_id": f"chaos-{row['movieId']}",
                    "title": title or row["title"],
                    "year": year,
                    "genres": [g for g in row["genres"].split("|") if "(" not in g],
                    "overview": row.get("overview") or None,
                }
            )
            if len(rows) >= n:
                break
    return rows


class Client:
    """One aiohttp session for many users (as a load balancer would see them)."""

    def __init__(self, base: str, recorder: Recorder, *, connections: int = 512) -> None:
        self.base = base
        self.rec = recorder
        self.session = aiohttp.ClientSession(
            base_url=base,
            connector=aiohttp.TCPConnector(limit=connections),
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
        )

    async def close(self) -> None:
        await self.session.close()

    async def call(
        self, route: str, method: str, path: str, **kw: Any
    ) -> tuple[int, dict[str, str], Any]:
        """(status, headers, JSON body or None); status 0 when the connection failed
        (nothing listening: the server was killed), TIMED_OUT when no answer came within
        REQUEST_TIMEOUT_S (a request left hanging)."""
        t = time.monotonic()
        try:
            async with self.session.request(method, path, **kw) as r:
                body: Any = None
                with contextlib.suppress(Exception):
                    body = await r.json(content_type=None)
                ms = (time.monotonic() - t) * 1000
                self.rec.record(route, r.status, ms, "Retry-After" in r.headers)
                return r.status, dict(r.headers), body
        except TimeoutError:
            self.rec.record(route, TIMED_OUT, (time.monotonic() - t) * 1000, False)
            return TIMED_OUT, {}, None
        except aiohttp.ClientError as exc:
            self.rec.client_errors[f"{route}: {type(exc).__name__}"] += 1
            self.rec.record(route, 0, (time.monotonic() - t) * 1000, False)
            return 0, {}, None

    async def sign_in(self, email: str, scope: str | None = None) -> str | None:
        data = {"grant_type": "password", "client_id": "mgw-app", "username": email,
                "password": PASSWORD}  # fmt: skip
        if scope:
            data["scope"] = scope
        status, _, body = await self.call("signin", "POST", "/oauth/token", data=data)
        return str(body["access_token"]) if status == 200 and body else None

    async def sign_up(self, prefix: str, n: int, *, parallel: int = 4) -> list[User]:
        """n registered, signed-in users (argon2 makes this the slow part of setting up)."""
        sem = asyncio.Semaphore(parallel)

        async def one(i: int) -> User:
            email = f"{prefix}-{i}@example.com"
            async with sem:
                for _ in range(20):
                    status, _, _ = await self.call(
                        "register",
                        "POST",
                        "/v1/auth/register",
                        json={"email": email, "password": PASSWORD, "display_name": f"U{i}"},
                    )
                    if status in (201, 409):
                        token = await self.sign_in(email)
                        if token:
                            user = User(email, token)
                            _, _, me = await self.call("me", "GET", "/v1/me", headers=user.headers)
                            user.user_id = str(
                                (me or {}).get("id") or (me or {}).get("user_id") or ""
                            )
                            return user
                    await asyncio.sleep(0.5)
            raise RuntimeError(f"could not register {email}")

        return list(await asyncio.gather(*(one(i) for i in range(n))))

    async def seed_titles(self, n: int) -> list[str]:
        """n titles in the catalog through the API, as the admin (MGW_BOOTSTRAP_ADMIN_*)."""
        token = None
        for _ in range(100):
            token = await self.sign_in(ADMIN_EMAIL, scope="catalog:write")
            if token:
                break
            await asyncio.sleep(0.2)  # the bootstrap admin is created once projectors run
        if token is None:
            raise RuntimeError("the bootstrap admin cannot sign in")
        headers = {"Authorization": f"Bearer {token}"}
        rows = title_rows(n)
        sem = asyncio.Semaphore(16)

        async def one(row: dict[str, Any]) -> None:
            async with sem:
                status, _, body = await self.call(
                    "seed", "POST", "/v1/content", json=row, headers=headers
                )
                if status != 202:
                    raise RuntimeError(f"seeding {row['content_id']}: {status} {body}")

        await asyncio.gather(*(one(r) for r in rows))
        return [r["content_id"] for r in rows]


#: the mixed workload: weights of each action a simulated user takes
MIX: dict[str, int] = {
    "playback": 45,
    "continue_watching": 15,
    "search": 15,
    "watch_add": 8,
    "watch_remove": 3,
    "watchlist": 8,
    "content": 5,
    "signin": 1,
}


@dataclass
class Workload:
    client: Client
    users: list[User]
    titles: list[str]
    ledger: Ledger = field(default_factory=Ledger)
    think_s: float = 0.05
    seed: int = 7
    words: list[str] = field(default_factory=list)
    mix: dict[str, int] = field(default_factory=lambda: dict(MIX))

    async def run(self, seconds: float, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        end = time.monotonic() + seconds
        if not self.words:
            self.words = _words(self.titles)

        async def user_loop(u: User, rnd: random.Random) -> None:
            actions, weights = zip(*self.mix.items(), strict=True)
            await asyncio.sleep(rnd.random() * self.think_s)  # do not start in lockstep
            while time.monotonic() < end and not stop.is_set():
                action = rnd.choices(actions, weights)[0]
                await getattr(self, f"_{action}")(u, rnd)
                if self.think_s:
                    await asyncio.sleep(rnd.expovariate(1 / self.think_s))

        await asyncio.gather(
            *(user_loop(u, random.Random(self.seed * 1000 + i)) for i, u in enumerate(self.users))
        )

    async def _playback(self, u: User, rnd: random.Random) -> None:
        # a handful of titles per user, each position higher than the last: the one
        # visible afterwards must be at least the highest acknowledged
        content = self.titles[(zlib.crc32(u.email.encode()) + rnd.randrange(4)) % len(self.titles)]
        key = self.ledger.playback[(u.email, content)]
        pos = max(key.attempted, default=START_S) + 5 + rnd.randrange(3)
        key.attempted.add(pos)
        body = {"content_id": content, "device_id": "chaos-device", "kind": "progress",
                "position_s": pos, "duration_s": DURATION_S}  # fmt: skip
        status, headers, _ = await self.client.call(
            "playback", "POST", "/v1/playback/events", json=body, headers=u.headers
        )
        if 200 <= status < 300:
            key.acked = max(key.acked or 0.0, pos)
            self.ledger.acked["playback"] += 1
            u.consistency = headers.get("X-Consistency-Token", u.consistency)

    async def _watch_add(self, u: User, rnd: random.Random) -> None:
        u.n += 1
        content = f"{self.titles[rnd.randrange(len(self.titles))]}"
        key = self.ledger.watch[(u.email, content)]
        if key.add is not None:  # a title is added once: its expected state stays exact
            return
        key.add = "unknown"
        status, headers, _ = await self.client.call(
            "watch_add",
            "POST",
            "/v1/me/watchlist",
            json={"content_id": content},
            headers={**u.headers, "Idempotency-Key": f"{u.email}-{content}-add"},
        )
        if 200 <= status < 300:
            key.add = "acked"
            self.ledger.acked["watch_add"] += 1
            u.watch_acked.append(content)
            u.consistency = headers.get("X-Consistency-Token", u.consistency)

    async def _watch_remove(self, u: User, rnd: random.Random) -> None:
        if not u.watch_acked:
            return
        content = u.watch_acked.pop(rnd.randrange(len(u.watch_acked)))
        key = self.ledger.watch[(u.email, content)]
        key.remove = "unknown"
        status, headers, _ = await self.client.call(
            "watch_remove",
            "DELETE",
            f"/v1/me/watchlist/{content}",
            headers={**u.headers, "Idempotency-Key": f"{u.email}-{content}-remove"},
        )
        if 200 <= status < 300:
            key.remove = "acked"
            self.ledger.acked["watch_remove"] += 1
            u.consistency = headers.get("X-Consistency-Token", u.consistency)

    def _read_headers(self, u: User) -> dict[str, str]:
        h = dict(u.headers)
        if u.consistency:
            h["X-Consistency-Token"] = u.consistency
        return h

    async def _continue_watching(self, u: User, rnd: random.Random) -> None:
        await self.client.call(
            "continue_watching", "GET", "/v1/me/continue-watching", headers=self._read_headers(u)
        )

    async def _watchlist(self, u: User, rnd: random.Random) -> None:
        await self.client.call(
            "watchlist", "GET", "/v1/me/watchlist", headers=self._read_headers(u)
        )

    async def _search(self, u: User, rnd: random.Random) -> None:
        q = " ".join(rnd.sample(self.words, k=min(len(self.words), rnd.choice((1, 1, 2)))))
        await self.client.call("search", "GET", "/v1/search", params={"q": q})

    async def _content(self, u: User, rnd: random.Random) -> None:
        cid = self.titles[rnd.randrange(len(self.titles))]
        await self.client.call("content", "GET", f"/v1/content/{cid}")

    async def _signin(self, u: User, rnd: random.Random) -> None:
        token = await self.client.sign_in(u.email)
        if token:
            u.token = token
            self.ledger.signins[u.email] += 1


def _words(titles: list[str]) -> list[str]:
    rows = title_rows(len(titles))
    words = {w.lower() for r in rows for w in str(r["title"]).split() if len(w) > 3 and w.isalpha()}
    return sorted(words) or ["movie"]


def every(seconds: float, fn: Callable[[], Any]) -> asyncio.Task[None]:
    """Call fn every few seconds until cancelled (samplers)."""

    async def loop() -> None:
        while True:
            fn()
            await asyncio.sleep(seconds)

    return asyncio.create_task(loop())
