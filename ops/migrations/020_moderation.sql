-- Catalog moderation (domain/moderation.py, docs/moderation.md): the moderation
-- projector's read model, folded from catalog.moderation. Reports and decisions are kept
-- whole (the queue's history); moderation_titles is each decided title's current state.
-- The search documents read moderation_titles.hidden: a hidden title has no document, so
-- it is in neither search nor recommendations.
CREATE TABLE IF NOT EXISTS moderation_reports (
    report_id   text        PRIMARY KEY,
    content_id  text        NOT NULL,
    user_id     text        NOT NULL,
    reason      text        NOT NULL,
    note        text        NOT NULL,
    reported_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS moderation_reports_title_idx
    ON moderation_reports (content_id, reported_at);

CREATE TABLE IF NOT EXISTS moderation_decisions (
    decision_id text        PRIMARY KEY,
    content_id  text        NOT NULL,
    action      text        NOT NULL,
    admin_id    text        NOT NULL,
    note        text        NOT NULL,
    fields      jsonb       NOT NULL,
    decided_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS moderation_decisions_title_idx
    ON moderation_decisions (content_id, decided_at);

CREATE TABLE IF NOT EXISTS moderation_titles (
    content_id  text        PRIMARY KEY,
    hidden      boolean     NOT NULL,
    last_action text        NOT NULL,
    decided_by  text        NOT NULL,
    decided_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS moderation_titles_hidden_idx
    ON moderation_titles (content_id) WHERE hidden;
