"""A worker's own /health, /ready and /metrics (``mgw worker --health-port``): what a
Kubernetes probe and a Prometheus scrape of a projector worker read (ops/k8s)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from core.settings import Settings
from mgw.probe import Probe

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_frozen_event_loop_fails_liveness_while_the_probe_still_answers() -> None:
    async def scenario() -> tuple[int, int, int, dict[str, object]]:
        probe = Probe("catalog", stall_s=0.5)
        port = probe.serve("127.0.0.1", 0)
        base = f"http://127.0.0.1:{port}"
        try:
            before = (await asyncio.to_thread(httpx.get, f"{base}/ready")).status_code
            probe.mark_ready()
            await asyncio.sleep(0.2)
            alive = (await asyncio.to_thread(httpx.get, f"{base}/health")).status_code
            time.sleep(1.2)  # noqa: ASYNC251 (the point: the loop is blocked, no heartbeat runs)
            frozen = httpx.get(f"{base}/health")  # noqa: ASYNC210 (the probe thread answers)
            return before, alive, frozen.status_code, frozen.json()
        finally:
            probe.close()

    before, alive, frozen, body = asyncio.run(scenario())
    assert before == 503 and alive == 200
    assert frozen == 503 and body["status"] == "stalled" and body["worker"] == "catalog"


def test_embedded_worker_serves_its_probes(settings: Settings, tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "MGW_DATA_DIR": str(tmp_path / "data"),
        "MGW_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "mgw.cli", "worker", "--projector", "catalog"]
    argv += ["--runtime", "embedded", "--health-port", str(port)]
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                ready = httpx.get(f"{base}/ready")
                if ready.status_code == 200:
                    break
                assert ready.status_code == 503 and ready.headers["Retry-After"] == "5"
            except httpx.ConnectError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert ready.json() == {"status": "ready", "worker": "catalog"}
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "mgw_projector_batch_seconds" in metrics.text
        missing = httpx.get(f"{base}/nothing-here")
        assert missing.status_code == 404 and "/health" in missing.json()["detail"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
