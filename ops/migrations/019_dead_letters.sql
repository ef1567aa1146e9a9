-- Dead letters (mgw dlq, GET /v1/admin/dlq, docs/operations/dead-letters.md).
--
-- dead_letters, dead_letter_decisions and dead_letter_purges are the dead_letters
-- projector's read model, folded from the <topic>.dlq topics and ops.dead_letters.
-- A dead letter is identified by the original record's position and the projector that
-- failed it; a second copy of it on a .dlq topic (a batch redone after a crash) keeps the
-- first copy's row, so a replay folds the same rows.
CREATE TABLE IF NOT EXISTS dead_letters (
    projector     text        NOT NULL,
    topic         text        NOT NULL,
    partition     int         NOT NULL,
    "offset"      bigint      NOT NULL,
    dlq_topic     text        NOT NULL,
    dlq_partition int         NOT NULL,
    dlq_offset    bigint      NOT NULL,
    reason        text        NOT NULL,
    error         text        NOT NULL,
    key           bytea,
    value         bytea       NOT NULL,
    -- the original record's headers (core.events.pack_headers), dlq_* ones left out
    headers       bytea       NOT NULL,
    -- when the .dlq topic stored it: the same on every replay
    dead_at       timestamptz NOT NULL,
    PRIMARY KEY (projector, topic, partition, "offset")
);
CREATE INDEX IF NOT EXISTS dead_letters_order_idx
    ON dead_letters (dead_at, projector, topic, partition, "offset");

-- Retries and skips, in ops.dead_letters order (one partition: ops_offset orders them).
CREATE TABLE IF NOT EXISTS dead_letter_decisions (
    ops_offset  bigint      PRIMARY KEY,
    projector   text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    "offset"    bigint      NOT NULL,
    decision    text        NOT NULL CHECK (decision IN ('retried', 'skipped')),
    outcome     text,
    error       text,
    decided_by  text,
    note        text        NOT NULL DEFAULT '',
    decided_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letter_decisions_letter_idx
    ON dead_letter_decisions (projector, topic, partition, "offset", ops_offset);

-- "Hide what was resolved before this point" (mgw dlq purge); null filters match all.
CREATE TABLE IF NOT EXISTS dead_letter_purges (
    ops_offset  bigint      PRIMARY KEY,
    topic       text,
    projector   text,
    purged_by   text,
    note        text        NOT NULL DEFAULT '',
    purged_at   timestamptz NOT NULL
);

-- The pipeline's bookkeeping, not a read model: the records a retry applied behind a
-- projector's checkpoint. Written in the transaction that applies the record, so a row
-- here means "applied once": a second retry finds it and applies nothing.
CREATE TABLE IF NOT EXISTS dead_letter_retries (
    projector   text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    "offset"    bigint      NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, topic, partition, "offset")
);
