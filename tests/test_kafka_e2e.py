"""The same end-to-end scenario on Kafka: API appends to the broker, Faust workers (one
consumer group per projector, separate OS processes) project, the API reads. Sign-in
works the same way: the identity projector is one more worker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from mgw.app import create_app
from mgw.worker import worker_argv
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.identity_helpers import admin_headers, new_user, password_login

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent
#: identity: accounts and sessions (the API waits for its outcomes to sign anyone in)
PROJECTORS = (
    "catalog", "availability", "search", "playback", "identity", "library", "interactions"
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


CATALOG_PROBE_PORT = _free_port()


@pytest.fixture
def kafka_settings(settings: Settings, kafka: str) -> Settings:
    return replace(
        settings, kafka_bootstrap_servers=kafka, consistency_wait_s=2.0, batch_linger_ms=20
    )


@pytest.fixture(params=["faust", "confluent"])
def workers(
    request: pytest.FixtureRequest, kafka_settings: Settings, tmp_path: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    s = kafka_settings
    env = {
        **os.environ,
        "DATABASE_URL": s.database_url or "",
        "REDIS_URL": s.redis_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": s.kafka_bootstrap_servers or "",
        "MGW_DATA_DIR": str(s.data_dir),
        "MGW_BATCH_LINGER_MS": "20",
        "MGW_LOG_LEVEL": "WARNING",
    }
    procs = []
    for name in PROJECTORS:
        # the catalog worker answers Kubernetes-style probes on a port of its own
        probe = {"MGW_HEALTH_PORT": str(CATALOG_PROBE_PORT)} if name == "catalog" else {}
        with open(tmp_path / f"worker-{name}.log", "wb") as out:
            procs.append(
                subprocess.Popen(
                    worker_argv(name, request.param),
                    cwd=ROOT,
                    env={**env, **probe},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
    yield procs
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _get_when_ready(
    client: TestClient,
    url: str,
    headers: dict[str, str],
    logs: Path,
    procs: list[subprocess.Popen[bytes]],
    deadline_s: float = 90,
) -> dict:  # type: ignore[type-arg]
    """Workers need a few seconds to join their groups; until then the token times out (503)."""
    deadline = time.monotonic() + deadline_s
    while True:
        r = client.get(url, headers=headers)
        if r.status_code == 200:
            return r.json()
        assert r.status_code == 503 and r.headers["Retry-After"] == "1", r.text
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise AssertionError(
                "projection never caught up:\n"
                + "\n".join(p.read_text()[-3000:] for p in logs.glob("worker-*.log"))
            )


@contextmanager
def _api(
    settings: Settings, logs: Path, procs: list[subprocess.Popen[bytes]], deadline_s: float = 90
) -> Iterator[TestClient]:
    """The API, started, and its first admin signed in once. With projectors in workers
    the API creates that admin in the background, once the identity worker (which needs
    a few seconds to join its group) answers: sign-in is retried until then."""
    deadline = time.monotonic() + deadline_s
    client = TestClient(create_app(settings, run_projectors=False, with_vectors=False))
    client.__enter__()
    try:
        while password_login(client, ADMIN_EMAIL, ADMIN_PASSWORD).status_code != 200:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise AssertionError(
                    "the identity worker never answered:\n"
                    + "\n".join(p.read_text()[-3000:] for p in logs.glob("worker-*.log"))
                )
            time.sleep(0.5)
        yield client
    finally:
        client.__exit__(None, None, None)


def test_post_project_get_on_kafka_with_faust_workers(
    kafka_settings: Settings, workers: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    with _api(kafka_settings, tmp_path, workers) as c:
        operator = admin_headers(c)
        alice_id, alice = new_user(c, "alice")
        assert c.get("/v1/me", headers=alice).json()["id"] == alice_id
        heat = {"content_id": "heat-1995", "title": "Heat", "year": 1995, "genres": ["Crime"]}
        assert c.post("/v1/content", json=heat, headers=alice).status_code == 403
        r = c.post("/v1/content", json=heat, headers=operator)
        assert r.status_code == 202
        token = r.json()["position"]
        assert token.startswith("catalog.content:")
        doc = _get_when_ready(
            c, "/v1/content/heat-1995", {"X-Consistency-Token": token}, tmp_path, workers
        )
        assert doc["title"] == "Heat" and doc["genres"] == ["Crime"]

        body = {
            "content_id": "heat-1995",
            "device_id": "tv",
            "kind": "progress",
            "position_s": 2550,
            "duration_s": 10200,
        }
        r = c.post("/v1/playback/events", json=body, headers=alice)
        assert r.status_code == 202
        cw = _get_when_ready(
            c,
            "/v1/me/continue-watching",
            {**alice, "X-Consistency-Token": r.json()["position"]},
            tmp_path,
            workers,
        )
        [item] = cw["items"]
        assert (item["content_id"], item["title"], item["progress"]) == ("heat-1995", "Heat", 0.25)

        # a device's sync batch: the library worker folds it, the watchlist reads it
        op = {"op_id": "kafka-op-1", "kind": "watchlist.add", "content_id": "heat-1995",
              "at": datetime.now(UTC).isoformat()}  # fmt: skip
        r = c.post("/v1/sync", json={"device_id": "phone", "ops": [op]}, headers=alice)
        assert r.status_code == 200 and r.json()["results"][0]["status"] == "applied", r.text
        listed = _get_when_ready(
            c,
            "/v1/me/watchlist",
            {**alice, "X-Consistency-Token": r.headers["X-Consistency-Token"]},
            tmp_path,
            workers,
        )
        assert [(i["content_id"], i["title"]) for i in listed["items"]] == [("heat-1995", "Heat")]

        # "not interested": the interactions worker folds it, recommendations leave it out
        r = c.post("/v1/me/recommendations/feedback", headers=alice,
                   json={"content_id": "heat-1995", "kind": "not_interested"})  # fmt: skip
        assert r.status_code == 202, r.text
        recs = _get_when_ready(
            c,
            "/v1/me/recommendations",
            {**alice, "X-Consistency-Token": r.headers["X-Consistency-Token"]},
            tmp_path,
            workers,
        )
        assert "heat-1995" not in [i["id"] for i in recs["items"]]
        with psycopg.connect(kafka_settings.database_url or "", autocommit=True) as conn:
            facts = conn.execute(
                "SELECT not_interested, started FROM rec_interactions"
                " WHERE content_id = 'heat-1995'"
            ).fetchall()
        assert facts == [(True, True)]  # refused, and started on the TV before

        ready = c.get("/ready").json()
        assert ready["log_backend"] == "kafka" and ready["status"] == "ready"
        # (lag counts the whole shared topic against this test's fresh database, so only
        # its presence is checked here; exact lag is tested on the embedded log)
        assert ready["projectors"]["playback"]["lag"] >= 0

        # the catalog the Kafka workers projected is searchable: the search worker follows
        # the catalog worker and builds the documents (vectors stay with that worker)
        deadline = time.monotonic() + 60
        while True:
            found = c.get("/v1/search", params={"q": "heat"}).json()
            if any(i["id"] == "heat-1995" for i in found["items"]):
                break
            assert time.monotonic() < deadline, found
            time.sleep(0.2)

    # the worker's own probes: ready with its stores open, alive, and its metrics counted
    probe = f"http://127.0.0.1:{CATALOG_PROBE_PORT}"
    assert httpx.get(f"{probe}/ready").json() == {"status": "ready", "worker": "catalog"}
    assert httpx.get(f"{probe}/health").status_code == 200
    metrics = httpx.get(f"{probe}/metrics").text
    assert 'mgw_records_applied_total{projector="catalog"}' in metrics

    # each projector is its own consumer group, with offsets committed in Kafka
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers})
    groups = {g.group_id for g in admin.list_consumer_groups().result(timeout=10).valid}
    assert {f"mgw-{name}" for name in PROJECTORS} <= groups
    for p in workers:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
