"""The `mgw` command as an operator uses it: `up --demo`, Ctrl-C, restart, `replay`."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from core.settings import Settings
from mgw import demo
from mgw.demo import content_id_for
from projections import maintenance
from projections.base import Stores
from projections.registry import PROJECTORS, by_name
from streams.embedded import EmbeddedLog
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import ProjectorLoop
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD, TEST_IDENTITY
from tests.helpers import content, play
from tests.identity_helpers import PASSWORD

ROOT = Path(__file__).resolve().parent.parent
#: `mgw up` makes the first admin from these; cheap argon2 and rate limits no test meets,
#: as in the in-process tests (tests/conftest.py)
IDENTITY_ENV = {
    "MGW_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
    "MGW_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
    "MGW_ARGON2_TIME_COST": str(TEST_IDENTITY.argon2_time_cost),
    "MGW_ARGON2_MEMORY_KIB": str(TEST_IDENTITY.argon2_memory_kib),
    "MGW_RATE_LIMITS": TEST_IDENTITY.rate_limits,
}


def _secret_file(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "secrets" / "admin-password"
    path.parent.mkdir(exist_ok=True)
    path.write_text(value + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mgw(*args: str, env: dict[str, str] | None = None, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "mgw.cli", *args],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def _sign_in(base: str, email: str, password: str) -> dict[str, str]:
    """The password grant, form-encoded, as an app sends it: Authorization headers."""
    r = httpx.post(
        f"{base}/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "mgw-app",
            "username": email,
            "password": password,
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


def _register(base: str, name: str) -> tuple[str, str, dict[str, str]]:
    """A new account, signed in: (user id, email, Authorization headers)."""
    email = f"{name}.{os.urandom(4).hex()}@example.com"
    r = httpx.post(
        f"{base}/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": name.title()},
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return r.json()["id"], email, _sign_in(base, email, PASSWORD)


def _get_retrying(url: str, headers: dict[str, str]) -> httpx.Response:
    """GET as a client should: a 503 with Retry-After (the projection has not caught up
    within the server's wait) is tried again."""
    deadline = time.monotonic() + 60
    while True:
        r = httpx.get(url, headers=headers, timeout=30)
        if r.status_code != 503 or time.monotonic() > deadline:
            return r
        time.sleep(float(r.headers.get("Retry-After", "1")))


def _all_caught_up(base: str) -> bool:
    lags = httpx.get(f"{base}/ready").json().get("projectors", {})
    return bool(lags) and all(isinstance(v, dict) and v.get("lag") == 0 for v in lags.values())


def _wait_for(fn, what: str, out: Path, proc: subprocess.Popen[bytes], timeout: float = 120):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mgw exited early:\n{out.read_text()[-4000:]}"
        try:
            got = fn()
            if got:
                return got
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{out.read_text()[-4000:]}")


def test_up_demo_serves_then_stops_cleanly_and_resumes(tmp_path: Path) -> None:
    port, data, out = _free_port(), tmp_path / "data", tmp_path / "up.log"
    base = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "QDRANT_URL": "",
        **IDENTITY_ENV,
        # as a Kubernetes Secret mounts it: a file with a trailing newline
        "MGW_BOOTSTRAP_ADMIN_PASSWORD": "",
        "MGW_BOOTSTRAP_ADMIN_PASSWORD_FILE": str(_secret_file(tmp_path, ADMIN_PASSWORD)),
    }
    toy = content_id_for("1")
    proc = _mgw("up", "--demo", "--data-dir", str(data), "--port", str(port), env=env, out=out)
    try:
        _wait_for(lambda: httpx.get(f"{base}/ready").status_code == 200, "ready", out, proc)
        doc = _wait_for(
            lambda: (r := httpx.get(f"{base}/v1/content/{toy}")).status_code == 200 and r.json(),
            "demo title",
            out,
            proc,
        )
        assert doc["title"] == "Toy Story" and doc["year"] == 1995
        assert doc["external_ids"] == {"imdb": "tt0114709", "tmdb": "862"}
        # the first admin, made from MGW_BOOTSTRAP_ADMIN_*, signs in with the password grant
        admin = _sign_in(base, ADMIN_EMAIL, ADMIN_PASSWORD)
        me = httpx.get(f"{base}/v1/me", headers=admin).json()
        assert me["email"] == ADMIN_EMAIL and "admin" in me["roles"]
        profiles = f"{base}/v1/admin/ranking/profiles"
        assert httpx.get(profiles).status_code == 401
        assert httpx.get(profiles, headers=admin).status_code == 200
        # a user of the app: registers, signs in, and reads only their own playback
        alice_id, alice_email, alice = _register(base, "alice")
        assert httpx.get(f"{base}/v1/me", headers=alice).json()["id"] == alice_id
        assert httpx.get(f"{base}/v1/me/continue-watching").status_code == 401
        assert httpx.get(profiles, headers=alice).status_code == 403
        r = httpx.post(
            f"{base}/v1/playback/events",
            headers=alice,
            json={
                "content_id": toy,
                "device_id": "phone",
                "kind": "progress",
                "position_s": 1800,
                "duration_s": 4860,
            },
        )
        assert r.status_code == 202
        cw = _get_retrying(  # the demo feeds may still be loading and projecting
            f"{base}/v1/me/continue-watching",
            {**alice, "X-Consistency-Token": r.headers["X-Consistency-Token"]},
        ).json()["items"]
        assert cw[0]["content_id"] == toy and cw[0]["title"] == "Toy Story"
        _wait_for(lambda: "Try:" in out.read_text(), "the demo feeds ingested", out, proc)
        _wait_for(
            lambda: _all_caught_up(base),
            "every projector caught up",
            out,
            proc,
        )
        # the demo viewers are accounts: signed in, each sees what the demo played
        viewer = _sign_in(base, demo.demo_email(demo.DEMO_USERS[0]), demo.DEMO_USER_PASSWORD)
        watching = httpx.get(f"{base}/v1/me/continue-watching", headers=viewer).json()["items"]
        assert watching and all(0.05 <= i["progress"] <= 0.9 for i in watching), watching
        # ... and has a library: services, a watchlist and ratings, all in the sync feed
        services = httpx.get(f"{base}/v1/me/services", headers=viewer).json()
        assert services["region"] == "US" and len(services["platforms"]) == 3, services
        listed = httpx.get(f"{base}/v1/me/watchlist", headers=viewer).json()["items"]
        assert len(listed) == 8 and all(i["title"] for i in listed), listed
        assert len(httpx.get(f"{base}/v1/me/ratings", headers=viewer).json()["items"]) == 6
        feed = httpx.get(f"{base}/v1/sync", headers=viewer).json()
        assert not feed["has_more"]
        assert {ch["entity"] for ch in feed["changes"]} >= {"services", "watchlist", "rating"}
        # one PlaybackStarted per demo session was appended (and, all caught up, projected)
        sessions = sum(e.event_type == "PlaybackStarted" for e in demo.playback_events(["x"]))
        assert sessions == len(demo.DEMO_USERS) * 12
        started = re.search(
            r'^mgw_events_appended_total\{event_type="PlaybackStarted",topic="playback.events"\}'
            r" (\S+)$",
            httpx.get(f"{base}/metrics").text,
            re.M,
        )
        assert started and float(started.group(1)) == sessions
        # the demo catalog has availability on all eight platforms
        doc = httpx.get(f"{base}/v1/content/{toy}?region=US").json()
        assert doc["title"] == "Toy Story" and doc["availability"] and doc["platforms"]
        for platform in ("netflix", "peacock", "disney_plus", "hbo_max"):
            page = httpx.get(f"{base}/v1/catalog/new?region=US&days=30&platform={platform}")
            assert page.status_code == 200 and page.json()["items"], platform
        # search answers while the embedding model works through the catalog (full text
        # and trigram first, vectors as they arrive)
        hits = _wait_for(
            lambda: httpx.get(f"{base}/v1/search", params={"q": "toy story"}).json()["items"],
            "search documents",
            out,
            proc,
        )
        assert hits[0]["id"] == toy
        typo = httpx.get(f"{base}/v1/search", params={"q": "jurasic park"}).json()
        assert typo["items"][0]["title"] == "Jurassic Park"
        on_netflix = httpx.get(
            f"{base}/v1/search", params={"q": "comedy", "platform": "netflix", "region": "US"}
        ).json()
        assert on_netflix["items"] and all(
            "netflix" in [p["platform"] for p in i["availability"]["platforms"]]
            for i in on_netflix["items"]
        )
        complete = httpx.get(f"{base}/v1/autocomplete", params={"q": "toy st"}).json()
        assert complete["items"][0]["id"] in (toy, content_id_for("3114"))
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code == 0, out.read_text()[-3000:]
    assert "Try:" in out.read_text()
    # the printed examples sign in: no identity headers of old
    assert f"{base}/oauth/token" in out.read_text() and "X-User-Id" not in out.read_text()

    # a second start on the same data dir resumes: nothing loaded or applied again
    out2 = tmp_path / "up2.log"
    proc = _mgw("up", "--demo", "--data-dir", str(data), "--port", str(port), env=env, out=out2)
    try:
        _wait_for(lambda: httpx.get(f"{base}/ready").status_code == 200, "ready", out2, proc)
        assert httpx.get(f"{base}/v1/content/{toy}").status_code == 200
        time.sleep(1.0)
        metrics = httpx.get(f"{base}/metrics").text
        applied = re.findall(
            r'^mgw_records_applied_total\{projector="(\w+)"\} (\S+)$', metrics, re.M
        )
        assert all(float(v) == 0 for _, v in applied), applied
        assert "already in the log" in out2.read_text()
        # the access token from before the restart still verifies (the signing keys are
        # in the data dir), and the account and its playback are still there
        cw = httpx.get(f"{base}/v1/me/continue-watching", headers=alice).json()["items"]
        assert cw[0]["content_id"] == toy
        again = _sign_in(base, alice_email, PASSWORD)
        assert httpx.get(f"{base}/v1/me", headers=again).json()["id"] == alice_id
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0


async def _continue_watching(redis: Any) -> dict[str, Any]:
    """Every continue-watching key in Redis with what it holds."""
    out: dict[str, Any] = {}
    async for key in redis.scan_iter(match="mgw:cw:*", count=1000):
        kind = (await redis.type(key)).decode()
        if kind == "zset":
            out[key.decode()] = await redis.zrange(key, 0, -1, withscores=True)
        elif kind == "hash":
            out[key.decode()] = await redis.hgetall(key)
        else:
            out[key.decode()] = kind
    return out


@pytest.mark.parametrize(
    ("projector", "processes"), [("playback", 1), ("playback", 2), ("catalog", None)]
)
async def test_replay_rebuilds_an_identical_projection(
    projector: str, processes: int | None, settings: Settings, stores: Stores, tmp_path: Path
) -> None:
    log = await EmbeddedLog(settings.database_url or "").open()
    pub = Publisher(log)
    await pub.publish_many([content(f"c{i}", f"Title {i}") for i in range(50)])
    await pub.publish_many(
        [play(f"u{i % 13}", f"c{i % 50}", float(60 * (i % 90)), seconds=i) for i in range(3000)]
    )
    proj = by_name(projector)
    no_qdrant = Stores(pg=stores.pg, redis=stores.redis)  # the CLI owns the Qdrant directory
    await ProjectorLoop(ProjectionPipeline(proj, no_qdrant, log), log, linger_ms=0).catch_up()
    await log.close()
    before = await maintenance.checksum(stores, proj)
    side_before = await _continue_watching(stores.redis)
    assert (projector != "playback") or side_before  # the plays left titles in progress

    out = tmp_path / "replay.log"
    env = {
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "MGW_DATA_DIR": str(settings.data_dir),
        "KAFKA_BOOTSTRAP_SERVERS": "",
    }
    extra = ["--processes", str(processes)] if processes else []
    proc = _mgw("replay", projector, "--no-progress", *extra, env=env, out=out)
    assert proc.wait(120) == 0, out.read_text()
    text = out.read_text()
    assert f"checksum before {before} after {before}: identical" in text, text
    assert await maintenance.checksum(stores, proj) == before
    # one process per share of the partitions when asked for several; the side store is
    # rebuilt to the same state either way
    assert (f"by {processes} processes" in text) == (processes == 2), text
    assert await _continue_watching(stores.redis) == side_before
    m = re.search(r"replayed \w+: (\d+) records applied", text)
    assert m and int(m.group(1)) == (50 if projector == "catalog" else 3000)


def test_up_shares_a_projector_between_processes(tmp_path: Path) -> None:
    port, data, out = _free_port(), tmp_path / "data", tmp_path / "up.log"
    base = f"http://127.0.0.1:{port}"
    env = {
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "QDRANT_URL": "",
        **IDENTITY_ENV,
    }
    proc = _mgw(
        "up",
        "--projector-processes",
        "2",
        "--data-dir",
        str(data),
        "--port",
        str(port),
        env=env,
        out=out,
    )
    try:
        _wait_for(lambda: httpx.get(f"{base}/ready").status_code == 200, "ready", out, proc)
        listing = subprocess.run(
            ["ps", "-ww", "-o", "pid=,args=", "--ppid", str(proc.pid)],
            capture_output=True,
            text=True,
        ).stdout
        shard_pids = [int(ln.split()[0]) for ln in listing.splitlines() if "--shard 1/2" in ln]
        # one second shard per projector but catalog, search (it holds the embedded vector
        # store) and notifications (it joins a record's offers and entity across topics),
        # and those reading one-partition topics (ranking, identity, rate limits, dead letters)
        sharded = sorted(ln.split("--projector ")[1].split()[0] for ln in listing.splitlines())
        single = {"catalog", "search", "notifications", "ranking", "identity", "rate_limits",
                  "dead_letters"}  # fmt: skip
        assert sharded == sorted(p.name for p in PROJECTORS if p.name not in single), listing
        assert {"availability", "playback", "resolution"} <= set(sharded)
        # users spread over every partition; each reads its own write through the token
        for i in range(24):
            _, _, user = _register(base, f"user{i}")
            r = httpx.post(
                f"{base}/v1/playback/events",
                headers=user,
                json={
                    "content_id": f"c{i}",
                    "device_id": "tv",
                    "kind": "progress",
                    "position_s": 600,
                    "duration_s": 6000,
                },
            )
            assert r.status_code == 202
            items = httpx.get(
                f"{base}/v1/me/continue-watching",
                headers={**user, "X-Consistency-Token": r.headers["X-Consistency-Token"]},
            ).json()["items"]
            assert [it["content_id"] for it in items] == [f"c{i}"]
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, out.read_text()[-3000:]
    for pid in shard_pids:  # the shard processes were stopped and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_up_on_a_busy_port_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = tmp_path / "up.log"
        proc = _mgw("up", "--data-dir", str(tmp_path / "d"), "--port", str(port), out=out)
        assert proc.wait(60) == 2
    text = out.read_text()
    assert "already in use" in text and "--port" in text
    assert not (tmp_path / "d" / "postgres").exists()  # nothing was started


def test_shard_supervisor_says_which_shards_are_still_starting(tmp_path: Path) -> None:
    from core.settings import Settings
    from mgw.worker import ShardSupervisor

    sup = ShardSupervisor(Settings(data_dir=tmp_path), ["playback", "library"], 3)
    assert sup.starting() == ["playback 1/3", "playback 2/3", "library 1/3", "library 2/3"]
    sup.ready_files[1].touch()  # what `mgw worker` does once it reads
    assert "playback 2/3" not in sup.starting() and len(sup.starting()) == 3
