"""Prometheus metrics, defined once so every module counts into the same series."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_APPENDED = Counter(
    "mgw_events_appended_total", "Events appended to the log", ["topic", "event_type"]
)
RECORDS_APPLIED = Counter(
    "mgw_records_applied_total", "Log records applied by a projector", ["projector"]
)
RECORDS_SKIPPED = Counter(
    "mgw_records_skipped_total",
    "Redelivered records at or below the projector checkpoint (no effect)",
    ["projector"],
)
BATCH_SECONDS = Histogram(
    "mgw_projector_batch_seconds",
    "Time to apply one batch, projection and side stores included",
    ["projector"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
BATCH_SIZE = Histogram(
    "mgw_projector_batch_records",
    "Records per applied batch",
    ["projector"],
    buckets=(1, 10, 100, 500, 1000, 2500, 5000, 10000, 20000),
)
PROJECTOR_LAG = Gauge(
    "mgw_projector_lag_records", "Records in the log not yet applied", ["projector", "topic"]
)
DEAD_LETTERS = Counter(
    "mgw_dead_letters_total",
    "Records sent to a dead-letter topic",
    ["projector", "topic", "reason"],
)
LOG_GROUP_RECORDS = Histogram(
    "mgw_log_group_commit_records",
    "Records committed together by one group commit of the embedded log",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096),
)
CONSISTENCY_WAITS = Histogram(
    "mgw_consistency_wait_seconds",
    "Time a query waited for its consistency token",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2),
)
PUSHES_PUBLISHED = Counter(
    "mgw_realtime_pushes_published_total",
    "Changes a projector published to connected devices after its batch committed",
    ["projector"],
)
PUSHES_FAILED = Counter(
    "mgw_realtime_pushes_failed_total",
    "Pushes lost because Redis refused the publish (devices catch up from their cursor)",
    ["projector"],
)
SOCKETS_OPEN = Gauge("mgw_realtime_sockets", "WebSockets open in this process")
PUSHES_DELIVERED = Counter(
    "mgw_realtime_messages_sent_total", "Messages sent over WebSockets", ["type"]
)
PROJECTOR_LAG_SECONDS = Gauge(
    "mgw_projector_lag_seconds",
    "Age of the oldest record not yet applied, by the log's append time (0 when caught up)",
    ["projector", "topic"],
)
#: request latency buckets: a cached read takes a millisecond, a consistency wait a second
_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
HTTP_REQUESTS = Counter(
    "mgw_http_requests_total",
    "HTTP requests answered, by route template (never the raw path) and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "mgw_http_request_seconds",
    "Time from the request to the last byte of its response, by route template",
    ["method", "route"],
    buckets=_HTTP_BUCKETS,
)
SEARCH_SECONDS = Histogram(
    "mgw_search_seconds",
    "Time a search or an autocomplete takes, from its parameters to its results",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
SIGNINS = Counter(
    "mgw_signins_total",
    "Token endpoint answers by grant: outcome 'issued' or the OAuth error code",
    ["grant", "outcome"],
)
DEPENDENCY_UP = Gauge(
    "mgw_dependency_up",
    "1 when the dependency answered the last /ready check, 0 when it did not",
    ["dependency"],
)
