"""A worker's own HTTP port for Kubernetes probes and Prometheus (``--health-port``).

Workers serve no API, so without this a probe could only check that the process exists.
``/health`` answers 503 once the worker's event loop has been silent for ``stall_s``
(a frozen loop applies nothing, yet its process looks alive); ``/ready`` answers 200 once
the projector's stores and log are open; ``/metrics`` is the Prometheus text format of
this process (batches, lag, dead letters). The server runs on its own thread so a
stalled loop can still be reported.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Awaitable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

T = TypeVar("T")
log = logging.getLogger("mgw.probe")


class Probe:
    def __init__(self, name: str, stall_s: float = 60.0) -> None:
        self.name = name
        self.stall_s = stall_s
        self.ready = False
        self._beat = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._server: ThreadingHTTPServer | None = None

    # -- the worker's side ---------------------------------------------------------------

    async def opened(self, pipeline: Awaitable[T]) -> T:
        """Await the projector's pipeline, then report ready and start the heartbeat."""
        value = await pipeline
        self.mark_ready()
        return value

    def mark_ready(self) -> None:
        self.ready = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._heartbeat())

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(1.0)

    # -- the probe's side ----------------------------------------------------------------

    def health(self) -> tuple[int, dict[str, Any]]:
        silent = time.monotonic() - self._beat
        if self.ready and silent > self.stall_s:
            return 503, {"status": "stalled", "worker": self.name, "loop_silent_s": round(silent)}
        return 200, {"status": "ok", "worker": self.name}

    def readiness(self) -> tuple[int, dict[str, Any]]:
        if self.ready:
            return 200, {"status": "ready", "worker": self.name}
        return 503, {"status": "starting", "worker": self.name}

    def serve(self, host: str, port: int) -> int:
        """Start answering on ``host:port`` (0 picks a free port); returns the port."""
        probe = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                    return
                if path in ("/health", "/healthz", "/livez"):
                    status, body = probe.health()
                elif path in ("/ready", "/readyz"):
                    status, body = probe.readiness()
                else:
                    status = 404
                    body = {"error": "not_found", "detail": "try /health, /ready or /metrics"}
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                if status == 503:
                    self.send_header("Retry-After", "5")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # probes every few seconds would drown the worker's own log

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="mgw-probe", daemon=True).start()
        bound = int(self._server.server_address[1])
        log.info("%s: /health, /ready and /metrics on %s:%d", self.name, host, bound)
        return bound

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
