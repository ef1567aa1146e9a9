-- A/B experiments (projections/experiments.py): definitions by version, each
-- experiment's status, and who was exposed to which variant.

-- Every version of every definition. The API picks the version (current + 1); the first
-- event with a given (key, version) wins. A version that would change a started
-- experiment's allocation (surface, seed, variants) is not stored.
CREATE TABLE IF NOT EXISTS experiment_versions (
    key               text        NOT NULL,
    version           int         NOT NULL CHECK (version > 0),
    surface           text        NOT NULL,
    variants          jsonb       NOT NULL,  -- [{"name", "weight", "params"}], control first
    primary_metric    text        NOT NULL,
    guardrail_metrics text[]      NOT NULL DEFAULT '{}',
    seed              text        NOT NULL,
    description       text        NOT NULL DEFAULT '',
    set_by            text,
    set_at            timestamptz NOT NULL,
    event_id          text,
    PRIMARY KEY (key, version)
);

-- One row per experiment: its current version and where it is in its life
-- (draft -> running -> stopped; stopped is final).
CREATE TABLE IF NOT EXISTS experiments (
    key         text        PRIMARY KEY,
    version     int         NOT NULL,
    surface     text        NOT NULL,
    status      text        NOT NULL DEFAULT 'draft'
                            CHECK (status IN ('draft', 'running', 'stopped')),
    created_at  timestamptz NOT NULL,
    started_at  timestamptz,
    stopped_at  timestamptz,
    stop_reason text,
    stopped_by  text
);
CREATE INDEX IF NOT EXISTS experiments_running_idx ON experiments (surface, started_at)
    WHERE status = 'running';

-- The first exposure of each user to each experiment; later ones change nothing.
CREATE TABLE IF NOT EXISTS experiment_exposures (
    experiment text        NOT NULL,
    user_id    text        NOT NULL,
    variant    text        NOT NULL,
    version    int         NOT NULL,
    at         timestamptz NOT NULL,
    PRIMARY KEY (experiment, user_id)
);
