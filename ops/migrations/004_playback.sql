-- Last known position per user x content (last writer wins on occurred_at, then log order).
CREATE TABLE IF NOT EXISTS playback_positions (
    user_id     text             NOT NULL,
    content_id  text             NOT NULL,
    device_id   text             NOT NULL,
    position_s  double precision NOT NULL,
    duration_s  double precision,
    state       text             NOT NULL,
    updated_at  timestamptz      NOT NULL,
    -- playback events folded into this row: counts every event once, so it also
    -- proves that redelivered batches are not applied twice
    event_count bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, content_id)
);
CREATE INDEX IF NOT EXISTS playback_positions_recent_idx
    ON playback_positions (user_id, updated_at DESC);
