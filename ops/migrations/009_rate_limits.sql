-- Rate-limit rules set by admins (projections/identity/rate_limits.py), one row per rule name:
-- the last RateLimitRuleSet in log order wins. Defaults and MGW_RATE_LIMITS live in
-- code and settings; this table only holds what an admin changed.
CREATE TABLE IF NOT EXISTS rate_limit_rules (
    rule     text        PRIMARY KEY,
    "limit"  int         NOT NULL CHECK ("limit" > 0),
    period_s int         NOT NULL CHECK (period_s > 0),
    set_by   text,
    set_at   timestamptz NOT NULL,
    event_id text
);
