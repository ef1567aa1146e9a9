"""Memory of `mgw up --demo` once the demo has loaded, against an empty `mgw up`.

    python bench/demo_memory.py

Starts `mgw up --demo` on a fresh data dir (embedded PostgreSQL and Redis), waits until
the demo feeds are ingested and every projector has caught up (/ready), and reads the
process's peak resident set (VmHWM) and current one (VmRSS). The baseline, in the same
run: `mgw up` on another fresh data dir, with nothing loaded, read the same way once
ready. The last line is one JSON object.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _ready(base: str) -> bool:
    try:
        body = httpx.get(f"{base}/ready", timeout=5).json()
    except (httpx.HTTPError, ValueError):
        return False
    lags = body.get("projectors", {})
    return bool(lags) and all(isinstance(v, dict) and v.get("lag") == 0 for v in lags.values())


def measure(demo: bool, timeout: float = 600.0) -> dict[str, Any]:
    """Start `mgw up` (with ``--demo`` or not), wait until it is ready and caught up, read
        its memory, stop it. The embedded PostgreSQL and Redis are processes of their own and
    not counted."""
    work = Path(tempfile.mkdtemp(prefix="mgw-bench-mem-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = work / "up.log"
    env = {
        **os.environ,
        "DATABASE_URL": "",
        "REDIS_URL": "",
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "QDRANT_URL": "",
        "MGW_LOG_LEVEL": "WARNING",
    }
    argv = [sys.executable, "-m", "mgw.cli", "up", "--data-dir", str(work / "data")]
    argv += ["--port", str(port)] + (["--demo"] if demo else [])
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not (_ready(base) and (not demo or "Try:" in log.read_text())):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mgw up did not get ready:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        loaded_s = time.perf_counter() - started
        time.sleep(2.0)  # the last batches' buffers settle
        return {
            "peak_rss_mib": round(_status_kib(proc.pid, "VmHWM") / 1024, 1),
            "rss_mib": round(_status_kib(proc.pid, "VmRSS") / 1024, 1),
            "ready_s": round(loaded_s, 1),
        }
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def main() -> None:
    empty = measure(demo=False)
    print(f"mgw up, empty: {empty}", file=sys.stderr)
    demo = measure(demo=True)
    print(f"mgw up --demo, loaded: {demo}", file=sys.stderr)
    result = {
        "bench": "demo_memory",
        "up_demo_peak_rss_mib": demo["peak_rss_mib"],
        "up_demo_rss_mib": demo["rss_mib"],
        "up_empty_peak_rss_mib": empty["peak_rss_mib"],
        "up_empty_rss_mib": empty["rss_mib"],
        "demo_over_empty_mib": round(demo["peak_rss_mib"] - empty["peak_rss_mib"], 1),
        "up_demo_ready_s": demo["ready_s"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
