"""Operator commands against a running `mgw up`, as an operator runs them: a second `mgw`
process on the same --data-dir, while readers keep calling the API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from mgw.demo import content_id_for
from tests.test_cli import (
    IDENTITY_ENV,
    ROOT,
    _all_caught_up,
    _free_port,
    _get_retrying,
    _mgw,
    _register,
    _sign_in,
    _wait_for,
)

ENV = {
    "DATABASE_URL": "",
    "REDIS_URL": "",
    "KAFKA_BOOTSTRAP_SERVERS": "",
    "QDRANT_URL": "",
    **IDENTITY_ENV,
}


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mgw.cli", *args],
        cwd=ROOT,
        env={**os.environ, **ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _register_retrying(base: str, name: str) -> dict[str, str]:
    """Sign up as a client should while the demo loads: a 503 (the identity projection
    is behind) says Retry-After, and the client does."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return _register(base, name)[2]
        except AssertionError as exc:
            if "503" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1)


class Readers:
    """Threads calling the API in a loop; every failed or empty answer is kept."""

    def __init__(self, base: str, calls: list[tuple[str, dict[str, str]]]) -> None:
        self.base, self.calls = base, calls
        self.stop = threading.Event()
        self.reads = 0
        self.bad: list[str] = []
        self.threads = [threading.Thread(target=self._loop, args=(c,)) for c in calls]

    def _loop(self, call: tuple[str, dict[str, str]]) -> None:
        path, headers = call
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    r = client.get(path, headers=headers)
                except httpx.HTTPError as exc:
                    self.bad.append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                self.reads += 1
                if r.status_code != 200:
                    self.bad.append(f"{path}: {r.status_code} {r.text[:200]}")
                elif not r.json()["items"]:
                    self.bad.append(f"{path}: empty")

    def __enter__(self) -> Readers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


@pytest.mark.timeout(1500)  # mgw up --demo loads the demo catalog first
def test_rebuilds_against_a_running_mgw_up_fail_no_read(tmp_path: Path) -> None:
    port, data, out = _free_port(), tmp_path / "data", tmp_path / "up.log"
    base = f"http://127.0.0.1:{port}"
    proc = _mgw("up", "--demo", "--data-dir", str(data), "--port", str(port), env=ENV, out=out)
    try:
        _wait_for(lambda: httpx.get(f"{base}/ready").status_code == 200, "ready", out, proc)
        _wait_for(  # the demo's catalog has landed
            lambda: httpx.get(f"{base}/v1/content/{content_id_for('3')}").status_code == 200,
            "demo titles",
            out,
            proc,
            timeout=300,
        )
        users = [_register_retrying(base, f"op{i}") for i in range(3)]
        for i, user in enumerate(users):
            for j in range(4):
                r = httpx.post(
                    f"{base}/v1/playback/events",
                    headers=user,
                    json={
                        "content_id": f"title-{i}-{j}",
                        "device_id": "tv",
                        "kind": "progress",
                        "position_s": 300 + j,
                        "duration_s": 6000,
                    },
                    timeout=60,
                )
                assert r.status_code == 202, r.text
            r = httpx.post(
                f"{base}/v1/me/watchlist",
                headers=user,
                json={"content_id": content_id_for(str(i + 1))},
                timeout=60,
            )
            assert r.status_code in (200, 201, 202), r.text
        for user in users:
            _wait_for(
                lambda u=user: (
                    (r := httpx.get(f"{base}/v1/me/watchlist", headers=u)).status_code == 200
                    and r.json()["items"]
                ),
                "the watchlist",
                out,
                proc,
            )
        # equal checksums need a quiet log: the demo's loading must be over and projected
        _wait_for(lambda: _all_caught_up(base), "every projector caught up", out, proc, 600)
        calls = [(p, u) for u in users for p in ("/v1/me/continue-watching", "/v1/me/watchlist")]
        results = {}
        with Readers(base, calls) as readers:
            for name in ("playback", "library"):
                done = _run(
                    "rebuild", name, "--data-dir", str(data), "--grace", "0", "--json",
                    "--no-progress",
                )  # fmt: skip
                assert done.returncode == 0, done.stderr[-3000:]
                results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            time.sleep(0.5)  # reads after the last switch, too
        assert readers.bad == [], readers.bad[:10]
        assert readers.reads > 20, readers.reads
        for got in results.values():
            assert got["state"] == "done", got
            assert got["checksum_before"] == got["checksum_after"], got
            assert got["records"] > 0, got
        # the progress the admin endpoint shows is the command's
        admin = _sign_in(
            base,
            IDENTITY_ENV["MGW_BOOTSTRAP_ADMIN_EMAIL"],
            IDENTITY_ENV["MGW_BOOTSTRAP_ADMIN_PASSWORD"],
        )
        listed = httpx.get(f"{base}/v1/admin/rebuilds", headers=admin)
        assert listed.status_code == 200, listed.text
        by_id = {it["rebuild_id"]: it for it in listed.json()["items"]}
        for got in results.values():
            assert by_id[got["rebuild_id"]]["state"] == "done"
        # the switched-in playback keeps projecting what arrives afterwards
        r = httpx.post(
            f"{base}/v1/playback/events",
            headers=users[0],
            json={
                "content_id": "after-the-switch",
                "device_id": "tv",
                "kind": "progress",
                "position_s": 900,
                "duration_s": 6000,
            },
            timeout=60,
        )
        assert r.status_code == 202, r.text
        cw = _get_retrying(  # a 503 with Retry-After while the demo still loads is retried
            f"{base}/v1/me/continue-watching",
            {**users[0], "X-Consistency-Token": r.headers["X-Consistency-Token"]},
        )
        ready = httpx.get(f"{base}/ready").text
        assert cw.status_code == 200, (cw.status_code, cw.text, ready, out.read_text()[-3000:])
        items = cw.json()["items"]
        assert items[0]["content_id"] == "after-the-switch", items
        assert len(items) == 5, items
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    assert code == 0, out.read_text()[-3000:]
