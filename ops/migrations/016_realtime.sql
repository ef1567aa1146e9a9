-- Remote commands to a user's devices (POST /v1/me/devices/{id}/commands) and their
-- outcome, folded from realtime.commands: queued -> delivered -> acked, or expired when
-- nobody acknowledged before the deadline (the sweeper appends the expiry).
CREATE TABLE IF NOT EXISTS device_commands (
    command_id    text             PRIMARY KEY,
    user_id       text             NOT NULL,
    device_id     text             NOT NULL,
    command       text             NOT NULL,
    content_id    text,
    position_s    double precision,
    from_device   text,
    status        text             NOT NULL
                  CHECK (status IN ('queued', 'delivered', 'acked', 'expired')),
    issued_at     timestamptz      NOT NULL,
    expires_at    timestamptz      NOT NULL,
    delivered_at  timestamptz,
    acked_at      timestamptz,
    connection_id text
);
-- what a device that connects must still receive, and what the sweeper expires
CREATE INDEX IF NOT EXISTS device_commands_open_idx ON device_commands (user_id, device_id)
    WHERE status IN ('queued', 'delivered');
CREATE INDEX IF NOT EXISTS device_commands_deadline_idx ON device_commands (expires_at)
    WHERE status IN ('queued', 'delivered');
