-- Blue/green projection rebuilds (mgw rebuild, docs/operations/rebuild.md): one row per
-- rebuild, written by the rebuild command as it goes, read by GET /v1/admin/rebuilds.
-- Operator bookkeeping, not a projection: the log does not know about it.
CREATE TABLE IF NOT EXISTS projection_rebuilds (
    rebuild_id   text        PRIMARY KEY,
    projector    text        NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('blue_green', 'as_of')),
    -- the schema the new version is built in (an as-of copy stays there)
    schema_name  text        NOT NULL,
    state        text        NOT NULL,
    until_spec   text,
    records_done bigint      NOT NULL DEFAULT 0,
    records_total bigint     NOT NULL DEFAULT 0,
    started_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    switched_at  timestamptz,
    finished_at  timestamptz,
    checksum_before text,
    checksum_after  text,
    error        text
);
CREATE INDEX IF NOT EXISTS projection_rebuilds_recent_idx ON projection_rebuilds (started_at DESC);
