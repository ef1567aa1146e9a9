-- Projector bookkeeping, shared by every read model.

-- Written in the same transaction as a projector's rows: records at or below it are skipped,
-- so a redelivered batch changes nothing.
CREATE TABLE IF NOT EXISTS projection_checkpoints (
    projector text   NOT NULL,
    topic     text   NOT NULL,
    partition int    NOT NULL,
    "offset"  bigint NOT NULL,
    PRIMARY KEY (projector, topic, partition)
);

-- Written after Redis/Qdrant are flushed too: everything below next_offset is fully applied.
-- Read-your-writes waits on it; the embedded runner resumes from it; lag is measured from it.
CREATE TABLE IF NOT EXISTS projection_watermarks (
    projector   text        NOT NULL,
    topic       text        NOT NULL,
    partition   int         NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projector, topic, partition)
);
