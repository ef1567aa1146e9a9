-- Identity read model, folded by the `identity` projector from identity.accounts.
-- Times are the events' times, never now(): a replay writes the same rows.

CREATE TABLE IF NOT EXISTS users (
    user_id             text PRIMARY KEY,
    email               text        NOT NULL,
    -- one account per email, case-insensitively: the projector checks before inserting,
    -- the unique index is the backstop
    email_normalized    text        NOT NULL UNIQUE,
    display_name        text        NOT NULL,
    password_hash       text,
    email_verified      boolean     NOT NULL DEFAULT false,
    source              text        NOT NULL,
    roles               text[]      NOT NULL DEFAULT '{user}',
    locked              boolean     NOT NULL DEFAULT false,
    locked_reason       text,
    mfa_secret_sealed   text,
    mfa_enabled_at      timestamptz,
    parental_pin_hash   text,
    -- access tokens issued before this are refused (logout everywhere, lock, reset,
    -- role change); the API keeps the recent ones in memory
    tokens_valid_after  timestamptz,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    last_login_at       timestamptz
);
CREATE INDEX IF NOT EXISTS users_search_trgm ON users
    USING gin ((email_normalized || ' ' || lower(display_name)) gin_trgm_ops);

-- What the projector decided for a command event, read by the API that appended it.
CREATE TABLE IF NOT EXISTS identity_outcomes (
    event_id  text PRIMARY KEY,
    outcome   text        NOT NULL,
    detail    jsonb,
    at        timestamptz NOT NULL
);

-- Verification and reset tokens, by SHA-256; single use.
CREATE TABLE IF NOT EXISTS email_tokens (
    token_hash  text PRIMARY KEY,
    user_id     text        NOT NULL,
    purpose     text        NOT NULL,  -- verify | reset
    email       text,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz
);
CREATE INDEX IF NOT EXISTS email_tokens_user ON email_tokens (user_id, purpose);

CREATE TABLE IF NOT EXISTS backup_codes (
    user_id    text NOT NULL,
    code_hash  text NOT NULL,
    used_at    timestamptz,
    PRIMARY KEY (user_id, code_hash)
);

-- A session is a refresh-token family: one sign-in on one device.
CREATE TABLE IF NOT EXISTS sessions (
    family_id       text PRIMARY KEY,
    user_id         text        NOT NULL,
    client_id       text        NOT NULL,
    method          text        NOT NULL,
    amr             text[]      NOT NULL DEFAULT '{}',
    scope           text        NOT NULL DEFAULT '',
    device_name     text,
    current_hash    text        NOT NULL,
    grant_ref       text UNIQUE,
    rotations       integer     NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL,
    last_used_at    timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions (user_id, created_at DESC);

-- Every refresh token a family ever had: a used one presented again is reuse.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash  text PRIMARY KEY,
    family_id   text        NOT NULL,
    user_id     text        NOT NULL,
    issued_at   timestamptz NOT NULL,
    used_at     timestamptz
);

-- Append-only feed of revocations for the API's in-memory check of access tokens.
CREATE TABLE IF NOT EXISTS token_revocations (
    seq          bigserial PRIMARY KEY,
    family_id    text,
    user_id      text,
    valid_after  timestamptz,
    at           timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS auth_codes (
    code_hash       text PRIMARY KEY,
    user_id         text        NOT NULL,
    client_id       text        NOT NULL,
    redirect_uri    text        NOT NULL,
    code_challenge  text        NOT NULL,
    scope           text        NOT NULL DEFAULT '',
    nonce           text,
    amr             text[]      NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL,
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz
);

CREATE TABLE IF NOT EXISTS device_grants (
    device_id         text PRIMARY KEY,
    device_code_hash  text        NOT NULL UNIQUE,
    user_code         text        NOT NULL,
    client_id         text        NOT NULL,
    scope             text        NOT NULL DEFAULT '',
    interval_s        integer     NOT NULL,
    status            text        NOT NULL,  -- pending | approved | denied | used
    user_id           text,
    created_at        timestamptz NOT NULL,
    expires_at        timestamptz NOT NULL,
    decided_at        timestamptz
);
CREATE INDEX IF NOT EXISTS device_grants_user_code ON device_grants (user_code);

CREATE TABLE IF NOT EXISTS api_keys (
    key_id       text PRIMARY KEY,
    user_id      text        NOT NULL,
    prefix       text        NOT NULL UNIQUE,
    secret_hash  text        NOT NULL,
    name         text        NOT NULL DEFAULT '',
    scopes       text[]      NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id);

CREATE TABLE IF NOT EXISTS profiles (
    profile_id  text PRIMARY KEY,
    user_id     text        NOT NULL,
    name        text        NOT NULL,
    max_rating  text,
    kids        boolean     NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS profiles_user ON profiles (user_id, created_at);

CREATE TABLE IF NOT EXISTS external_identities (
    provider   text NOT NULL,
    subject    text NOT NULL,
    user_id    text NOT NULL,
    email      text NOT NULL DEFAULT '',
    linked_at  timestamptz NOT NULL,
    PRIMARY KEY (provider, subject)
);

-- One row per identity event, keyed by its log offset so a replay writes the same rows.
-- Only the fields listed per event type reach `detail`: never a hash, token or secret.
CREATE TABLE IF NOT EXISTS audit_log (
    log_offset  bigint PRIMARY KEY,
    at          timestamptz NOT NULL,
    action      text        NOT NULL,
    outcome     text        NOT NULL,
    actor_id    text,
    target_id   text,
    ip          text,
    user_agent  text,
    detail      jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS audit_log_target ON audit_log (target_id, log_offset DESC);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log (at DESC);
