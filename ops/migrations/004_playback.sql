-- Last known position per user x content (last writer wins on occurred_at, then log order).
-- In progress / watched is derived from position and duration (domain/playback.py), not stored.
CREATE TABLE IF NOT EXISTS playback_positions (
    user_id     text             NOT NULL,
    content_id  text             NOT NULL,
    device_id   text             NOT NULL,
    position_s  double precision NOT NULL,
    duration_s  double precision,
    updated_at  timestamptz      NOT NULL,
    -- playback events folded into this row: counts every event once, so it also
    -- proves that redelivered batches are not applied twice
    event_count bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, content_id)
)
-- Positions are rewritten on every heartbeat. With room left in each page and no index on
-- the columns that change, PostgreSQL updates rows in place (HOT): no index writes, no
-- bloat. Continue-watching is served from Redis, so no index on updated_at is needed here.
WITH (fillfactor = 70);
