"""The system under test on the Kafka runtime: a KRaft broker, `mgw up --no-projectors`
and the projectors in `mgw worker` processes, laid out as a fleet is deployed
(docker-compose.yml, ops/k8s/): the API, and one worker unit per projector, each its
own process group (a container, a pod), watched by a supervisor that starts a dead one
again the way systemd's ``Restart=always`` or a Deployment's controller would.

* The broker: ops/kafka/kafka.sh on free loopback ports, its data under
  ``<data_dir>/kafka``; started by the first `start()` and kept across `kill()` /
  `start()` (a crashed API does not take the broker with it). `stop_broker()` stops it
  (SIGTERM, a clean shutdown; ``hard=True``: SIGKILL) and `start_broker()` starts it
  again on the same ports and data.
* The API: `mgw up` with ``MGW_RUN_PROJECTORS=false`` (``--no-projectors``) and
  ``KAFKA_BOOTSTRAP_SERVERS``; it also starts the embedded PostgreSQL and Redis, which
  the workers then reach by the URLs read from their data directories.
* The workers: `mgw worker --projector P` on the runtime the docs name the default
  (Faust; ``worker_runtime="confluent"`` for the other), one process per projector,
  ``scale[P]`` processes for the projectors the load writes most (they share the
  consumer group ``mgw-P``, so a killed one's partitions move to the other). Each has
  its probe (``MGW_HEALTH_PORT``) on a port of its own; `start()` waits for every
  probe's /ready.
* `kill()` is SIGKILL to `mgw up`'s process group only: the workers are separate units
  and keep running, as they would when the API's pod or host dies. `start()` then
  starts `mgw up` again and leaves running workers alone.
* `workers()` are the worker processes alive now of the projectors the chaos load keeps
  busy (`targets`: those reading what it appends), so kill-worker lands mid-batch
  rather than on an idle worker; `all_workers()` are all of them. The supervisor
  replaces any one that exits (whatever the reason: kill -9, a crash on a lost broker)
  after a short delay that grows while it keeps dying (``RestartSec`` with backoff);
  every restart is in `restarts` and on stderr.

`/ready` of `mgw up` computes each projector's lag from the log's end offsets against
the watermarks the workers commit in PostgreSQL (api/health.py), so "lag 0" there
means the workers caught up, wherever they run.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from ops.chaos.stack import Stack, _redis_config, free_port

REPO = Path(__file__).resolve().parents[2]
KAFKA_SH = REPO / "ops" / "kafka" / "kafka.sh"

#: projectors run in more than one process (the ones the chaos load writes to most)
DEFAULT_SCALE = {"playback": 2, "library": 2}
#: what the chaos load (ops/chaos/load.py) appends to: progress, watchlist changes,
#: sign-ins, searches; the projectors reading these are the ones busy with batches
BUSY_TOPICS = ("playback.events", "library.events", "identity.accounts", "discovery.searches")


@dataclass
class Unit:
    """One supervised worker process: its command, and the process running it now."""

    projector: str
    index: int
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    started_at: float = 0.0
    #: when the supervisor may start it again (after it died)
    due: float = 0.0
    failures: int = 0

    @property
    def name(self) -> str:
        return f"{self.projector}#{self.index}"


@dataclass
class KafkaStack(Stack):
    scale: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_SCALE))
    #: faust: the default of `mgw worker` (docs/design.md "Runtimes"); or confluent
    worker_runtime: str = "faust"
    #: projectors to run (default: every one in projections/registry.py)
    projectors: tuple[str, ...] = ()
    #: the projectors whose workers `workers()` offers to kill-worker (default: those
    #: reading BUSY_TOPICS, so the kill lands mid-batch rather than on an idle worker)
    targets: tuple[str, ...] = ()
    kafka_port: int = field(default_factory=free_port)
    controller_port: int = field(default_factory=free_port)
    units: list[Unit] = field(default_factory=list)
    #: every restart the supervisor did: projector, old and new pid, exit code, when
    restarts: list[dict[str, Any]] = field(default_factory=list)
    broker_starts: int = 0
    _supervisor: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _t0: float = field(default_factory=time.monotonic)
    _worker_env: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.env = {
            **self.env,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "MGW_RUN_PROJECTORS": "false",
        }
        from projections.registry import PROJECTORS

        if not self.projectors:
            self.projectors = tuple(p.name for p in PROJECTORS)
        if not self.targets:
            self.targets = tuple(
                p.name
                for p in PROJECTORS
                if p.name in self.projectors and set(p.topics) & set(BUSY_TOPICS)
            )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def kafka_dir(self) -> Path:
        return self.data_dir / "kafka"

    # -- the broker -------------------------------------------------------------------

    def _kafka_env(self) -> dict[str, str]:
        return {
            **os.environ,
            "KAFKA_PORT": str(self.kafka_port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_DATA_DIR": str(self.kafka_dir),
            "KAFKA_START_TIMEOUT": "120",
            # the broker goes when the harness goes, even if it is killed
            "KAFKA_WATCH_PID": str(os.getpid()),
            "PYTHON": sys.executable,  # its readiness check uses confluent_kafka
        }

    def _kafka_sh(self, cmd: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(KAFKA_SH), cmd],
            env=self._kafka_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def broker_pid(self) -> int | None:
        with suppress(OSError, ValueError):
            pid = int((self.kafka_dir / "kafka.pid").read_text().strip())
            if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return pid
        return None

    def start_broker(self) -> float:
        """Start the broker (first time: a fresh cluster) and wait until it answers;
        seconds it took."""
        t0 = time.monotonic()
        if self.broker_starts == 0:
            fetched = self._kafka_sh("fetch", timeout=900)
            if fetched.returncode != 0:
                raise RuntimeError(f"kafka.sh fetch: {fetched.stderr[-2000:]}")
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        out = self._kafka_sh("start")
        if out.returncode != 0:
            raise RuntimeError(f"kafka.sh start: {out.stderr[-3000:]}")
        self.broker_starts += 1
        return time.monotonic() - t0

    def stop_broker(self, hard: bool = False) -> None:
        """A clean broker shutdown (SIGTERM, kafka.sh waits for it), or a crash."""
        pid = self.broker_pid()
        if pid is None:
            return
        if not hard:
            out = self._kafka_sh("stop", timeout=90)
            if out.returncode != 0:
                raise RuntimeError(f"kafka.sh stop: {out.stderr[-2000:]}")
            return
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGKILL)
        with suppress(psutil.Error):
            proc.wait(30)
        (self.kafka_dir / "kafka.pid").unlink(missing_ok=True)

    # -- the API ----------------------------------------------------------------------

    def start(self, timeout: float = 180) -> float:
        """The broker (unless running), `mgw up`, then the workers (unless running);
        waits until /ready and every worker's probe say ready. Seconds it took."""
        t0 = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.broker_pid() is None:
            self.start_broker()
        super().start(timeout)
        if not self.units:
            self._start_workers()
        self.wait_workers_ready(max(30.0, timeout - (time.monotonic() - t0)))
        if self.starts == 1:
            self._wait_bootstrap_admin(max(30.0, timeout - (time.monotonic() - t0)))
        return time.monotonic() - t0

    def kill(self) -> None:
        """SIGKILL to `mgw up`'s process group; the workers (their own units) live on."""
        super().kill()

    def _wait_bootstrap_admin(self, timeout: float) -> None:
        """On Kafka the first admin is created once the identity worker consumes: until
        then nobody can sign in. Ready means that, too, when the env names an admin."""
        email = self.env.get("MGW_BOOTSTRAP_ADMIN_EMAIL")
        password = self.env.get("MGW_BOOTSTRAP_ADMIN_PASSWORD")
        if not email or not password:
            return
        data = {"grant_type": "password", "client_id": "mgw-app", "username": email,
                "password": password}  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if httpx.post(f"{self.base}/oauth/token", data=data, timeout=5).status_code == 200:
                    return
            self._check_api()
            time.sleep(0.5)
        raise TimeoutError(f"the bootstrap admin cannot sign in after {timeout:.0f} s")

    def _check_api(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"mgw up exited with {self.proc.returncode}; see {self.data_dir}/up-*.log"
            )

    # -- the workers ------------------------------------------------------------------

    def _service_urls(self) -> dict[str, str]:
        """The embedded PostgreSQL's and Redis' URLs, as `mgw up` resolved them."""
        from pgserver.postgres_server import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(self.pgdata)
        if info is None:
            raise RuntimeError(f"no postmaster.pid in {self.pgdata}")
        found = self.redis()
        conf = _redis_config(found[0]) if found else None
        if conf is None:
            raise RuntimeError(f"no embedded redis-server for {self.data_dir}")
        return {"DATABASE_URL": info.get_uri(), "REDIS_URL": f"unix://{conf.parent}/redis.socket"}

    def _start_workers(self) -> None:
        self._worker_env = {
            **self._env(),
            **self._service_urls(),
            "MGW_DATA_DIR": str(self.data_dir),
        }
        self.units = [
            Unit(name, i) for name in self.projectors for i in range(self.scale.get(name, 1))
        ]
        for u in self.units:
            self._spawn(u)
        self._stopping.clear()
        self._supervisor = threading.Thread(
            target=self._supervise, name="kafka-stack-supervisor", daemon=True
        )
        self._supervisor.start()

    def _spawn(self, u: Unit) -> None:
        from mgw.worker import worker_argv

        u.health_port = free_port()
        log = open(self.data_dir / f"worker-{u.projector}-{u.index}.log", "ab")  # noqa: SIM115
        u.proc = subprocess.Popen(
            worker_argv(u.projector, self.worker_runtime),
            env={**self._worker_env, "MGW_HEALTH_PORT": str(u.health_port)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a unit of its own: signals to the API miss it
        )
        log.close()
        u.started_at = time.monotonic()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.1):
            now = time.monotonic()
            with self._lock:
                for u in self.units:
                    if u.proc is None or u.proc.poll() is None:
                        continue
                    if u.due == 0.0:  # just found dead: RestartSec, longer if it keeps dying
                        lived = now - u.started_at
                        u.failures = 0 if lived > 30 else u.failures + 1
                        u.due = now + min(0.2 * 2**u.failures, 10.0)
                        continue
                    if now < u.due:
                        continue
                    old, code = u.proc.pid, u.proc.returncode
                    self._spawn(u)
                    u.due = 0.0
                    row = {
                        "worker": u.name,
                        "pid": old,
                        "returncode": code,
                        "new_pid": u.proc.pid,  # type: ignore[union-attr]
                        "at_s": round(now - self._t0, 2),
                    }
                    self.restarts.append(row)
                    print(
                        f"kafka_stack: worker {u.name} (pid {old}) exited with {code}; "
                        f"started again as pid {row['new_pid']}",
                        file=sys.stderr,
                        flush=True,
                    )

    def wait_workers_ready(self, timeout: float = 120) -> float:
        """Seconds until every worker's probe answers /ready 200 (stores and log open)."""
        t0 = time.monotonic()
        pending = list(self.units)
        with httpx.Client(timeout=2) as http:
            while pending:
                if time.monotonic() - t0 > timeout:
                    names = ", ".join(u.name for u in pending)
                    raise TimeoutError(f"workers not ready after {timeout:.0f} s: {names}")
                u = pending[0]
                with suppress(httpx.HTTPError):
                    if http.get(f"http://127.0.0.1:{u.health_port}/ready").status_code == 200:
                        pending.pop(0)
                        continue
                time.sleep(0.2)
        return time.monotonic() - t0

    def workers(self) -> list[psutil.Process]:
        """The `mgw worker` processes of the `targets` alive now: what kill-worker picks
        from (every worker: `all_workers()`)."""
        return self.all_workers(self.targets)

    def all_workers(self, projectors: tuple[str, ...] | None = None) -> list[psutil.Process]:
        """Every `mgw worker` process alive now (one per unit), or those of `projectors`."""
        out = []
        with self._lock:
            for u in self.units:
                if projectors is not None and u.projector not in projectors:
                    continue
                if u.proc is not None and u.proc.poll() is None:
                    with suppress(psutil.Error):
                        out.append(psutil.Process(u.proc.pid))
        return out

    def stop_workers(self, timeout: float = 30) -> None:
        """Stop supervising, then SIGTERM every worker (SIGKILL past the timeout)."""
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
            self._supervisor = None
        procs = [u.proc for u in self.units if u.proc is not None]
        for p in procs:
            if p.poll() is None:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for p in procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.units = []

    # -- what the soak samples, and the end ---------------------------------------------

    def processes(self) -> dict[str, list[psutil.Process]]:
        out = super().processes()
        out["workers"] = self.all_workers()
        pid = self.broker_pid()
        out["kafka"] = []
        if pid is not None:
            with suppress(psutil.Error):
                out["kafka"] = [psutil.Process(pid)]
        return out

    def shutdown_services(self) -> None:
        """Stop everything this stack started: the workers, `mgw up`, the broker, then
        PostgreSQL and Redis."""
        try:
            self.stop_workers()
            self.stop()
        finally:
            with suppress(Exception):
                self.stop_broker()
            if self.broker_pid() is not None:
                with suppress(Exception):
                    self.stop_broker(hard=True)
            super().shutdown_services()
