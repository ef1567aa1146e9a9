"""Library sync benchmark: ops/s through ``POST /v1/sync`` into the projections, and the
latency of a ``GET /v1/sync`` page at a million stored changes.

    python bench/library_sync.py [--ops 20000] [--batch 500] [--naive 1000]
                                 [--feed-rows 1000000] [--pages 400]

Runs the real app in-process (embedded PostgreSQL and Redis, the embedded log, the
projectors in the API's event loop) and drives it through ASGI with httpx, so every
request crosses routing, authentication, validation, the log and the library projector:
a sync answer comes only once the projector has applied its ops (``applied: true``).

* apply: ``--ops`` ops (watchlist adds and removes, ratings, watches over 500 titles and 4
  users) in batches of ``--batch``, one client, then 2 and ``--clients`` at once (each its
  own user, as devices of different accounts would be). Baseline in the
  same run: ``--naive`` ops sent one op per request through the same endpoint.
* feed: ``--feed-rows`` changes are seeded with COPY straight into ``library_items`` (the
  projector would take minutes to fold a million ops; the read path is what is measured):
  half of them for one user, the rest 1,000 per user. Then ``--pages`` pages of 500
  from random cursors of that heaviest user through ``GET /v1/sync``. Baseline in the
  same run: the same pages read by ``OFFSET`` in SQL, the way a feed without a sequence
  index would page.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from api.sync import encode_cursor  # noqa: E402
from core.db import migrate  # noqa: E402
from core.events import Event  # noqa: E402
from core.settings import IdentitySettings, Settings  # noqa: E402
from domain.identity.tokens import issue_access_token  # noqa: E402
from mgw import embedded  # noqa: E402
from mgw.app import create_app  # noqa: E402

PASSWORD = "quiet rivers carry old stones"
TITLES = 500


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _title(i: int) -> Event:
    cid = f"bench-title-{i}"
    return Event(
        "ContentUpserted",
        cid,
        {
            "content_id": cid, "kind": "movie", "title": f"Bench Title {i}",
            "original_title": None, "year": 2000 + i % 25, "runtime_min": 100,
            "genres": ["Drama"], "overview": None,
            "external_ids": {"imdb": None, "tmdb": None},
            "series_id": None, "season": None, "episode": None,
        },
    )  # fmt: skip


def _ops(n: int, rnd: random.Random) -> list[dict[str, Any]]:
    at = datetime.now(UTC) - timedelta(seconds=30)
    out = []
    for _ in range(n):
        cid = f"bench-title-{rnd.randrange(TITLES)}"
        roll = rnd.random()
        op: dict[str, Any] = {"op_id": str(uuid.uuid4()), "content_id": cid, "at": at.isoformat()}
        if roll < 0.5:
            op["kind"] = "watchlist.add"
        elif roll < 0.65:
            op["kind"] = "watchlist.remove"
        elif roll < 0.85:
            op.update(kind="rating.set", value={"rating": rnd.randint(1, 10)})
        else:
            op["kind"] = "history.add"
        out.append(op)
    return out


async def _sync(http: httpx.AsyncClient, h: dict[str, str], ops: list[dict[str, Any]]) -> None:
    r = await http.post("/v1/sync", json={"device_id": "bench", "ops": ops}, headers=h)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["applied"], "the projector did not apply the batch within the wait"
    bad = [x for x in body["results"] if x["status"] != "applied"]
    assert not bad, bad[:3]


async def apply_rates(
    http: httpx.AsyncClient, users: list[dict[str, str]], args: argparse.Namespace
) -> dict[str, Any]:
    rnd = random.Random(7)
    out: dict[str, Any] = {}
    # one client: batches of --batch, users in turn
    batches = [_ops(args.batch, rnd) for _ in range(args.ops // args.batch)]
    t = time.perf_counter()
    for i, b in enumerate(batches):
        await _sync(http, users[i % len(users)], b)
    elapsed = time.perf_counter() - t
    out["batched_ops_per_s"] = round(len(batches) * args.batch / elapsed, 1)
    _log(f"apply, batches of {args.batch}, one client: {out['batched_ops_per_s']} ops/s")
    # several clients at once, each its own user: the runner folds their batches together
    for k in sorted({2, args.clients}):
        batches = [_ops(args.batch, rnd) for _ in range(args.ops // args.batch)]

        async def client(j: int, k: int = k, batches: list[Any] = batches) -> None:
            for i in range(j, len(batches), k):
                await _sync(http, users[j], batches[i])

        t = time.perf_counter()
        await asyncio.gather(*(client(j) for j in range(k)))
        elapsed = time.perf_counter() - t
        out[f"batched_ops_per_s_{k}_clients"] = round(len(batches) * args.batch / elapsed, 1)
        _log(f"apply, {k} clients: {out[f'batched_ops_per_s_{k}_clients']} ops/s")
    # baseline: one op per request
    single = _ops(args.naive, rnd)
    t = time.perf_counter()
    for i, op in enumerate(single):
        await _sync(http, users[i % len(users)], [op])
    elapsed = time.perf_counter() - t
    out["naive_ops_per_s"] = round(args.naive / elapsed, 1)
    out["batched_vs_naive"] = round(out["batched_ops_per_s"] / out["naive_ops_per_s"], 1)
    _log(f"apply, one op per request: {out['naive_ops_per_s']} ops/s")
    return out


async def seed_feed(pg: Any, rows: int) -> tuple[str, int]:
    """COPY ``rows`` changes into library_items; returns the heaviest user and its count."""
    heavy = "bench-heavy"
    per = 1000
    heavy_rows = max(rows // 2, per)
    light_users = (rows - heavy_rows) // per
    now = datetime.now(UTC)
    t = time.perf_counter()
    async with pg.connection() as conn:
        async with conn.cursor().copy(
            "COPY library_items (user_id, entity, key, seq, deleted, value, stamp, op_id,"
            " device_id, changed_at) FROM STDIN"
        ) as copy:
            buf = io.StringIO()
            for u in range(light_users + 1):
                user, n = (heavy, heavy_rows) if u == light_users else (f"bench-u{u}", per)
                for s in range(1, n + 1):
                    deleted = s % 7 == 0
                    value = "\\N" if deleted else '{"added_at": "2026-12-01T00:00:00Z"}'
                    buf.write(
                        f"{user}\twatchlist\tt{s}\t{s}\t{'t' if deleted else 'f'}\t{value}\t"
                        f"{s:013d}.000000.bench\top{s}\tbench\t{now.isoformat()}\n"
                    )
                if buf.tell() > 8 << 20:
                    await copy.write(buf.getvalue())
                    buf = io.StringIO()
            await copy.write(buf.getvalue())
        await conn.execute(
            "INSERT INTO library_users (user_id, seq) SELECT user_id, max(seq)"
            " FROM library_items WHERE user_id LIKE 'bench-%%' GROUP BY user_id"
            " ON CONFLICT (user_id) DO UPDATE SET seq = EXCLUDED.seq"
        )
        await conn.execute("ANALYZE library_items")
    _log(f"seeded {rows:,} changes by COPY in {time.perf_counter() - t:.1f} s")
    return heavy, heavy_rows


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


async def feed_latency(
    http: httpx.AsyncClient, pg: Any, token: str, heavy: str, n: int, pages: int
) -> dict[str, Any]:
    rnd = random.Random(11)
    cursors = [rnd.randrange(0, n - 500) for _ in range(pages)]
    h = {"Authorization": f"Bearer {token}"}
    api_ms: list[float] = []
    for seq in cursors:
        t = time.perf_counter()
        r = await http.get("/v1/sync", params={"since": encode_cursor(seq, 0)}, headers=h)
        api_ms.append((time.perf_counter() - t) * 1000)
        assert r.status_code == 200, r.text
        assert len(r.json()["changes"]) == 500
    sql_ms: list[float] = []
    async with pg.connection() as conn:
        for seq in cursors[: max(50, pages // 4)]:
            t = time.perf_counter()
            cur = await conn.execute(
                "SELECT seq, entity, key, deleted, value, changed_at, device_id"
                " FROM library_items WHERE user_id = %s ORDER BY seq OFFSET %s LIMIT 500",
                (heavy, seq),
            )
            assert len(await cur.fetchall()) == 500
            sql_ms.append((time.perf_counter() - t) * 1000)
    return {
        "feed_page_ms": {
            "p50": _pct(api_ms, 0.5), "p95": _pct(api_ms, 0.95), "p99": _pct(api_ms, 0.99),
        },
        "offset_page_sql_ms": {
            "p50": _pct(sql_ms, 0.5), "p95": _pct(sql_ms, 0.95), "p99": _pct(sql_ms, 0.99),
        },
    }  # fmt: skip


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    app = create_app(settings)
    out: dict[str, Any] = {}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=60
        ) as http:
            c = app.state.mgw
            await c.publisher.publish_many([_title(i) for i in range(TITLES)])
            while True:
                async with c.stores.pg.connection() as conn:
                    cur = await conn.execute("SELECT count(*) FROM content")
                    row = await cur.fetchone()
                if row and row[0] >= TITLES:
                    break
                await asyncio.sleep(0.1)
            users: list[dict[str, str]] = []
            tokens: list[str] = []
            for i in range(max(2, args.clients)):
                email = f"sync{i}@example.com"
                r = await http.post(
                    "/v1/auth/register",
                    json={"email": email, "password": PASSWORD, "display_name": "Sync"},
                )
                assert r.status_code == 201, r.text
                r = await http.post(
                    "/oauth/token",
                    data={"grant_type": "password", "client_id": "mgw-app",
                          "username": email, "password": PASSWORD},
                )  # fmt: skip
                assert r.status_code == 200, r.text
                tokens.append(r.json()["access_token"])
                users.append({"Authorization": f"Bearer {tokens[-1]}"})
            out.update(await apply_rates(http, users, args))
            # the heaviest feed's owner signs in with a token minted by the app's own keys
            heavy, n = await seed_feed(c.stores.pg, args.feed_rows)
            ident = c.identity
            token = issue_access_token(
                ident.keyset,
                issuer=ident.issuer,
                audience=settings.identity.audience,
                subject=heavy,
                session_id="bench",
                scope="library",
                client_id="mgw-app",
                roles=["user"],
                amr=["pwd"],
                ttl_s=3600,
                now=int(time.time()),
            )
            out.update(await feed_latency(http, c.stores.pg, token, heavy, n, args.pages))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--naive", type=int, default=1000)
    ap.add_argument("--clients", type=int, default=8, help="concurrent devices, last apply run")
    ap.add_argument("--feed-rows", type=int, default=1_000_000)
    ap.add_argument("--pages", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mgw-bench-sync-") as tmp:
        root = Path(tmp)
        pg = embedded.start_postgres(root)
        rd = embedded.start_redis(root)
        try:
            migrate(pg.uri)
            settings = Settings(
                data_dir=root / "data",
                database_url=pg.uri,
                redis_url=f"unix://{rd.server.socket_file}",
                batch_linger_ms=0,
                search_indexer=False,
                embeddings="none",
                consistency_wait_s=10.0,
                identity=IdentitySettings(
                    rate_limits=",".join(
                        f"{r}=1000000/60" for r in ("login", "register", "token", "mfa")
                    ),
                ),
            )
            result = asyncio.run(run(args, settings))
        finally:
            rd.stop()
            pg.stop()
    result["stored_changes"] = args.feed_rows
    result["targets"] = {"batched_ops_per_s": 20_000, "feed_page_p99_ms": 20}
    best = max(v for k, v in result.items() if k.startswith("batched_ops_per_s"))
    result["best_batched_ops_per_s"] = best
    result["met"] = {
        "batched_ops_per_s": best >= 20_000,
        "feed_page_p99_ms": result["feed_page_ms"]["p99"] <= 20,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
