-- Streaming sessions: who streams what on which device, decided in log order against the
-- account's limit (a start past it is refused), ended by the device or by expiry (an
-- event the sweeper appends when three heartbeats were missed).
CREATE TABLE IF NOT EXISTS playback_sessions (
    session_id     text             PRIMARY KEY,
    user_id        text             NOT NULL,
    device_id      text             NOT NULL,
    content_id     text             NOT NULL,
    heartbeat_s    double precision NOT NULL,
    -- the sign-in it streams under (a device in /v1/me/devices), when known
    auth_session   text,
    started_at     timestamptz      NOT NULL,
    last_heartbeat timestamptz      NOT NULL,
    state          text             NOT NULL CHECK (state IN ('active', 'refused', 'ended')),
    end_reason     text,
    ended_at       timestamptz
);
CREATE INDEX IF NOT EXISTS playback_sessions_active_idx ON playback_sessions (user_id)
    WHERE state = 'active';

-- An admin's per-account limit; accounts without a row get the default (MGW_MAX_STREAMS),
-- which the start event carries so a replay decides with the same number.
CREATE TABLE IF NOT EXISTS stream_limits (
    user_id     text PRIMARY KEY,
    max_streams int  NOT NULL
);
