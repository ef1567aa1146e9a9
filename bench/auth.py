"""Identity benchmark: argon2 per hash, logins/s, token verifications/s, rotations/s.

Runs the real app in-process (embedded PostgreSQL and Redis, the embedded log, the
identity projector in the API's loop) and drives it through ASGI with httpx, so every
request crosses routing, authentication, the log and the projector as in production,
without a socket in the way. Baseline in the same run: ``GET /health``.

* argon2id: ms per hash at the configured parameters (the default, or MGW_ARGON2_*);
* logins/s: password grants, 2 at a time (argon2 runs in threads; this machine has 2
  cores), each one an argon2 verification plus a SessionStarted decided by the projector;
* token verifications/s on the hot path: ``AccessTokenVerifier.verify`` + the revocation
  check, for tokens seen before (the cache: what an API sees from a client that calls it
  more than once in 15 minutes) and for never-seen tokens (a full ES256 verification);
  plus authenticated ``GET /v1/me`` requests/s through the whole app;
* refused logins: median time for a wrong password, an unknown account and a locked
  account (the answer is the same; the work should be too);
* refresh rotations/s: the token endpoint, sequential and 8 sessions at once; each is
  an event the projector decides (reuse detection) before the answer.

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench._stack import embedded_settings, serving  # noqa: E402
from core.settings import IdentitySettings, Settings  # noqa: E402
from domain.identity.passwords import Argon2Params, Passwords  # noqa: E402
from domain.identity.tokens import issue_access_token  # noqa: E402

PASSWORD = "quiet rivers carry old stones"


def argon2_ms(params: Argon2Params, runs: int = 10) -> float:
    p = Passwords(params)
    phc = p.hash(PASSWORD)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        p.verify(phc, PASSWORD)
        times.append((time.perf_counter() - t) * 1000)
    return round(statistics.median(times), 2)


async def _rate(n: int, fn: Any, concurrency: int) -> float:
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with sem:
            await fn(i)

    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return n / (time.perf_counter() - t)


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with serving(settings) as (c, http):
        out["health_rps"] = round(await _rate(2000, lambda i: http.get("/health"), 8), 1)
        # accounts
        emails = [f"bench{i}@example.com" for i in range(args.users)]
        for e in emails:
            r = await http.post(
                "/v1/auth/register",
                json={"email": e, "password": PASSWORD, "display_name": "Load Tester"},
            )
            assert r.status_code == 201, r.text

        sessions: list[dict[str, Any]] = []

        async def login(i: int) -> None:
            r = await http.post(
                "/oauth/token",
                data={
                    "grant_type": "password",
                    "client_id": "mgw-app",
                    "username": emails[i % len(emails)],
                    "password": PASSWORD,
                },
            )
            assert r.status_code == 200, r.text
            sessions.append(r.json())

        out["logins_per_s"] = round(await _rate(args.logins, login, 2), 2)

        # wrong password, unknown account, locked account: same answer, same work?
        locked = emails[-1]
        async with c.stores.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT user_id FROM users WHERE email_normalized = %s", (locked,)
            )
            row = await cur.fetchone()
        assert row is not None
        from api.identity.commands import decide
        from core.events import Event

        await decide(
            c,
            Event(
                "UserLocked",
                row[0],
                {
                    "user_id": row[0],
                    "reason": "bench",
                    "actor_id": "bench",
                    "ip": None,
                    "user_agent": None,
                },
            ),
        )

        async def refused_ms(email: str, password: str) -> float:
            times = []
            for _ in range(args.refusals):
                t = time.perf_counter()
                r = await http.post(
                    "/oauth/token",
                    data={
                        "grant_type": "password",
                        "client_id": "mgw-app",
                        "username": email,
                        "password": password,
                    },
                )
                times.append((time.perf_counter() - t) * 1000)
                assert r.status_code == 400 and r.json()["error"] == "invalid_grant"
            return round(statistics.median(times), 2)

        out["refused_login_median_ms"] = {
            "wrong_password": await refused_ms(emails[0], "not the right one at all"),
            "unknown_account": await refused_ms("nobody@example.com", PASSWORD),
            "locked_account": await refused_ms(locked, PASSWORD),
        }

        # verification on the hot path: verifier + revocation check, as api/authn does
        ident = c.identity
        token = sessions[0]["access_token"]

        def verify_cached(n: int) -> float:
            t = time.perf_counter()
            for _ in range(n):
                claims = ident.verifier.verify(token)
                if ident.revocations.refuses(claims):
                    raise AssertionError("revoked")
            return n / (time.perf_counter() - t)

        now = int(time.time())
        fresh = [
            issue_access_token(
                ident.keyset,
                issuer=ident.issuer,
                audience=settings.identity.audience,
                subject=f"u{i}",
                session_id=f"s{i}",
                scope="profile",
                client_id="mgw-app",
                roles=["user"],
                amr=["pwd"],
                ttl_s=900,
                now=now,
            )
            for i in range(args.fresh)
        ]

        def verify_fresh() -> float:
            t = time.perf_counter()
            for tok in fresh:
                ident.revocations.refuses(ident.verifier.verify(tok))
            return len(fresh) / (time.perf_counter() - t)

        verify_cached(1000)  # warm
        out["verifications_per_s_cached"] = round(verify_cached(args.verifications), 0)
        out["verifications_per_s_first_seen"] = round(verify_fresh(), 0)
        headers = {"Authorization": f"Bearer {token}"}
        out["authenticated_get_me_rps"] = round(
            await _rate(2000, lambda i: http.get("/v1/me", headers=headers), 8), 1
        )

        # refresh rotations
        refresh = {i: s["refresh_token"] for i, s in enumerate(sessions[:8])}

        async def rotate(i: int) -> None:
            k = i % len(refresh)
            r = await http.post(
                "/oauth/token",
                data={
                    "grant_type": "refresh_token",
                    "client_id": "mgw-app",
                    "refresh_token": refresh[k],
                },
            )
            assert r.status_code == 200, r.text
            refresh[k] = r.json()["refresh_token"]

        out["rotations_per_s_sequential"] = round(await _rate(args.rotations, rotate, 1), 1)

        # 8 sessions at once, each rotating its own token in turn (a token presented
        # twice at the same time is reuse, by design)
        async def session_worker(k: int) -> None:
            for _ in range(args.rotations // len(refresh)):
                await rotate(k)

        t = time.perf_counter()
        await asyncio.gather(*(session_worker(k) for k in refresh))
        done = args.rotations // len(refresh) * len(refresh)
        out["rotations_per_s_8_sessions"] = round(done / (time.perf_counter() - t), 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=20)
    ap.add_argument("--logins", type=int, default=60)
    ap.add_argument("--verifications", type=int, default=200_000)
    ap.add_argument("--fresh", type=int, default=3000)
    ap.add_argument("--rotations", type=int, default=400)
    ap.add_argument("--refusals", type=int, default=30, help="refused logins per case")
    args = ap.parse_args()
    defaults = Settings.from_env().identity
    params = Argon2Params(
        defaults.argon2_time_cost, defaults.argon2_memory_kib, defaults.argon2_parallelism
    )
    result: dict[str, Any] = {
        "argon2": {
            "time_cost": params.time_cost,
            "memory_kib": params.memory_kib,
            "parallelism": params.parallelism,
        },
        "argon2_ms_per_hash": argon2_ms(params),
    }
    unlimited = ",".join(f"{r}=1000000/60" for r in ("login", "register", "token", "mfa"))
    identity = IdentitySettings(
        argon2_time_cost=params.time_cost,
        argon2_memory_kib=params.memory_kib,
        argon2_parallelism=params.parallelism,
        rate_limits=unlimited,
    )
    with embedded_settings("mgw-bench-auth-", identity=identity) as settings:
        result.update(asyncio.run(run(args, settings)))
    result["target_verifications_per_s"] = 20_000
    result["verification_target_met"] = result["verifications_per_s_cached"] >= 20_000
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
