"""Real services for the tests: embedded PostgreSQL 18, Redis 6.2, Qdrant local mode,
and one KRaft Kafka broker per session (ops/kafka/kafka.sh). Nothing is mocked.

Each test gets its own database (cloned from a migrated template), its own Redis
database number flushed before use, and its own Qdrant directory.

``client`` is the whole app over those services (``mgw.app.create_app``, its lifespan
run). It runs with ``app_settings``, which is ``settings`` unless a test module
overrides that fixture (webhook secrets, a mail server, an identity provider, ...).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.db import migrate, open_pool
from core.settings import IdentitySettings, Settings
from projections.base import Stores

ROOT = Path(__file__).resolve().parent.parent
# every respond(Model, body) checks its body against its model (api/responses.py): a
# handler and its documented response that disagree fail the test that reaches them
os.environ["MGW_VALIDATE_RESPONSES"] = "1"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "a long operator passphrase"
#: cheap argon2 (tests hash often; bench/auth.py measures the real parameters), a first
#: admin, and rate limits no test meets unless it sets its own
TEST_IDENTITY = IdentitySettings(
    argon2_time_cost=1,
    argon2_memory_kib=8192,
    bootstrap_admin_email=ADMIN_EMAIL,
    bootstrap_admin_password=ADMIN_PASSWORD,
    rate_limits=",".join(
        f"{rule}=100000/60"
        for rule in ("login", "register", "token", "password_reset", "mfa", "pin", "device")
    ),
)
_TEMPLATE = "mgw_template"


@dataclass
class Services:
    pg_admin_uri: str
    redis_socket: str
    kafka_bootstrap: str | None = None

    def db_uri(self, name: str) -> str:
        base, _, query = self.pg_admin_uri.partition("?")
        head = base.rsplit("/", 1)[0]
        return f"{head}/{name}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    from mgw import embedded

    root = tmp_path_factory.mktemp("services")
    pg = embedded.start_postgres(root)
    rd = embedded.start_redis(root)
    admin = pg.uri
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {_TEMPLATE}")
        conn.execute(f"CREATE DATABASE {_TEMPLATE}")
    svc = Services(admin, rd.server.socket_file)
    migrate(svc.db_uri(_TEMPLATE))
    try:
        yield svc
    finally:
        rd.stop()
        _stop_outright(rd.server.pid)
        pg.stop()


def _stop_outright(pid: int) -> None:
    """This suite's own Redis ends with the suite: ``stop()`` stops it only as its last
    client (it may be shared), and connections tests leave behind count as clients."""
    import psutil

    if not pid:  # psutil.Process(None) would be this very process
        return
    try:
        proc = psutil.Process(pid)
        proc.terminate()
        proc.wait(30)
    except psutil.Error:
        pass  # already gone


_db_counter = itertools.count()
_redis_counter = itertools.count(1)


@pytest.fixture
def db_uri(services: Services) -> str:
    name = f"t{os.getpid()}_{next(_db_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {_TEMPLATE}")
    return services.db_uri(name)


@pytest.fixture
def redis_url(services: Services) -> str:
    n = next(_redis_counter) % 16
    import redis

    r = redis.Redis(unix_socket_path=services.redis_socket, db=n)
    r.flushdb()
    r.close()
    return f"unix://{services.redis_socket}?db={n}"


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS"):  # a broker someone else runs
        yield os.environ["KAFKA_BOOTSTRAP_SERVERS"]
        return
    from tests.kafka_broker import start_broker

    broker = start_broker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def settings(db_uri: str, redis_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db_uri,
        redis_url=redis_url,
        batch_linger_ms=0,
        identity=TEST_IDENTITY,
    )


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    """The settings ``client`` runs the app with; a test module overrides this fixture to
    change them."""
    return settings


@pytest.fixture
def client(app_settings: Settings) -> Iterator[TestClient]:
    """The whole app, started (projectors, background steps, the first admin)."""
    from mgw.app import create_app

    with TestClient(create_app(app_settings)) as c:
        yield c


@pytest.fixture
def admin(client: TestClient) -> dict[str, str]:
    """The bootstrapped admin's headers: every admin route (and ``catalog:write``) takes
    them."""
    from tests.identity_helpers import admin_headers  # it imports this module

    return admin_headers(client)


@pytest.fixture
async def stores(settings: Settings, tmp_path: Path) -> AsyncIterator[Stores]:
    import redis.asyncio as aioredis
    from qdrant_client import AsyncQdrantClient

    assert settings.database_url and settings.redis_url
    pool = open_pool(settings.database_url)
    await pool.open(wait=True)
    redis = aioredis.from_url(settings.redis_url)
    qdrant = AsyncQdrantClient(path=str(tmp_path / "qdrant"))
    try:
        yield Stores(pg=pool, redis=redis, qdrant=qdrant)
    finally:
        await qdrant.close()
        await redis.aclose()
        await pool.close()


def unique_topic(prefix: str = "t") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def run(coro: Any) -> Any:
    return asyncio.run(coro)
