-- The embedded event log: a partitioned, append-only log in PostgreSQL.
CREATE TABLE IF NOT EXISTS log_topics (
    topic        text PRIMARY KEY,
    partitions   int  NOT NULL CHECK (partitions > 0),
    retention_ms bigint NOT NULL DEFAULT -1
);

-- One row per topic-partition; its row lock serializes appenders (see streams/embedded.py).
CREATE TABLE IF NOT EXISTS log_heads (
    topic       text   NOT NULL,
    partition   int    NOT NULL,
    next_offset bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (topic, partition)
);

CREATE TABLE IF NOT EXISTS log_records (
    topic         text        NOT NULL,
    partition     int         NOT NULL,
    "offset"      bigint      NOT NULL,
    key           bytea,
    value         bytea       NOT NULL,
    headers       bytea       NOT NULL,  -- core.events.pack_headers: read lazily
    appended_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset")
);
