"""A throwaway single-node Kafka (KRaft) broker for tests, via ops/kafka/kafka.sh.

Plain module (no pytest import) so it can back a session-scoped fixture::

    from tests.kafka_broker import start_broker

    @pytest.fixture(scope="session")
    def kafka(tmp_path_factory):
        broker = start_broker(tmp_path_factory.mktemp("kafka"))
        yield broker            # broker.bootstrap == "127.0.0.1:<port>"
        broker.stop()

If ``KAFKA_BOOTSTRAP_SERVERS`` is set, nothing is started: the returned broker
points there and ``stop()`` does nothing.

Needs Java 17+ and, the first time only, Maven (jars are cached in
ops/kafka/.jars or $MGW_KAFKA_HOME). A fresh start takes ~1.5-2.5 s.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO_ROOT / "ops" / "kafka" / "kafka.sh"

FETCH_TIMEOUT_S = 900  # first run downloads ~45 MB of jars through Maven
START_TIMEOUT_S = 90


class KafkaBrokerError(RuntimeError):
    pass


class KafkaBroker:
    """A running (or external) broker. ``bootstrap`` is "host:port"."""

    def __init__(
        self,
        bootstrap: str,
        *,
        data_dir: Path | None = None,
        env: dict | None = None,
        managed: bool = False,
    ) -> None:
        self.bootstrap = bootstrap
        self.data_dir = data_dir
        self.managed = managed
        self._env = env
        self._stopped = not managed

    @property
    def port(self) -> int:
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def log_file(self) -> Path | None:
        return self.data_dir / "kafka.log" if self.data_dir else None

    def log_tail(self, lines: int = 50) -> str:
        if not self.log_file or not self.log_file.exists():
            return ""
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Stop the broker started by start_broker(); no-op for external ones. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        subprocess.run(
            ["bash", str(KAFKA_SH), "stop"],
            env=self._env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )

    def __enter__(self) -> KafkaBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        kind = "managed" if self.managed else "external"
        return f"KafkaBroker({self.bootstrap!r}, {kind})"


def free_port(exclude: tuple = ()) -> int:
    """An unused TCP port on 127.0.0.1 (racy by nature; start_broker retries)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in exclude:
            return port


def _run(args: list, env: dict, timeout: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            ["bash", str(KAFKA_SH), *args],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise KafkaBrokerError(f"kafka.sh {' '.join(args)} timed out after {timeout}s") from exc


def start_broker(
    tmp_dir: os.PathLike[str] | str,
    port: int | None = None,
    *,
    controller_port: int | None = None,
    start_timeout: float = START_TIMEOUT_S,
) -> KafkaBroker:
    """Start a fresh single-node broker with its data under ``tmp_dir``.

    ``port=None`` picks free client and controller ports. Honours
    ``KAFKA_BOOTSTRAP_SERVERS`` (then nothing is started).
    """
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
    if external:
        return KafkaBroker(external, managed=False)

    data_dir = Path(tmp_dir).resolve() / "kafka"
    base_env = dict(os.environ)
    base_env.setdefault("PYTHON", sys.executable)  # readiness check uses confluent_kafka

    fetch = _run(["fetch"], base_env, FETCH_TIMEOUT_S)
    if fetch.returncode != 0:
        raise KafkaBrokerError(
            f"kafka.sh fetch failed (rc={fetch.returncode}):\n{fetch.stderr[-4000:]}"
        )

    attempts = 1 if port is not None else 3  # retry only when we chose the ports
    last_err = ""
    for _ in range(attempts):
        p = port or free_port()
        cp = controller_port or free_port(exclude=(p,))
        env = dict(
            base_env,
            KAFKA_PORT=str(p),
            KAFKA_CONTROLLER_PORT=str(cp),
            KAFKA_DATA_DIR=str(data_dir),
            KAFKA_CLEAN="1",
            KAFKA_START_TIMEOUT=str(int(start_timeout)),
            KAFKA_WATCH_PID=str(os.getpid()),  # broker dies with this process
        )
        res = _run(["start"], env, start_timeout + 30)
        if res.returncode == 0:
            broker = KafkaBroker(f"127.0.0.1:{p}", data_dir=data_dir, env=env, managed=True)
            atexit.register(broker.stop)
            return broker
        last_err = res.stderr
        _run(["stop"], env, 60)
        if "already in use" not in last_err and "BindException" not in last_err:
            break
    raise KafkaBrokerError(f"could not start Kafka via {KAFKA_SH}:\n{last_err[-4000:]}")
