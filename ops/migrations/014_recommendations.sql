-- Recommendations: what each user did with each title (the recommender's input), and the
-- raw activity timeline experiments are measured on.

-- One row per user x title: the facts domain/recs/signals.py weighs. Facts, not a weight:
-- the weights and the time decay are code, so changing them needs no replay.
CREATE TABLE IF NOT EXISTS rec_interactions (
    user_id        text        NOT NULL,
    content_id     text        NOT NULL,
    finished       integer     NOT NULL DEFAULT 0,      -- watches recorded (history)
    started        boolean     NOT NULL DEFAULT false,  -- a play of it was reported
    rating         smallint,                            -- 1..10, the user's current rating
    watchlisted    boolean     NOT NULL DEFAULT false,
    clicks         integer     NOT NULL DEFAULT 0,      -- click, detail view, trailer, share
    impressions    integer     NOT NULL DEFAULT 0,
    not_interested boolean     NOT NULL DEFAULT false,
    more_like_this boolean     NOT NULL DEFAULT false,
    last_at        timestamptz NOT NULL,                -- the newest fact's event time
    updated_at     timestamptz NOT NULL DEFAULT now(),  -- projection time: retrain trigger
    PRIMARY KEY (user_id, content_id)
);
CREATE INDEX IF NOT EXISTS rec_interactions_updated_idx ON rec_interactions (updated_at);

-- Every activity event, plus the play starts and completions from the playback and
-- library topics, on one timeline per user (event time). Experiment results count what
-- an exposed user did after the exposure from here.
-- kind: impression, click, detail_view, trailer, share, not_interested, more_like_this,
-- play_start, completion
CREATE TABLE IF NOT EXISTS activity_events (
    user_id    text        NOT NULL,
    event_id   text        NOT NULL,
    kind       text        NOT NULL,
    content_id text        NOT NULL,
    surface    text        NOT NULL DEFAULT '',
    at         timestamptz NOT NULL,
    PRIMARY KEY (user_id, event_id)
);
CREATE INDEX IF NOT EXISTS activity_events_user_at_idx ON activity_events (user_id, at);

-- Trained models: the artefact lives in a file (MGW_RECS_DIR, default <data dir>/recs);
-- the newest row is the one every API process serves.
CREATE TABLE IF NOT EXISTS rec_models (
    version        text        PRIMARY KEY,
    path           text        NOT NULL,
    trained_at     timestamptz NOT NULL,
    -- rec_interactions.updated_at of the newest row the training read
    data_until     timestamptz,
    users          integer     NOT NULL,
    items          integer     NOT NULL,
    interactions   integer     NOT NULL,
    fit_s          real        NOT NULL,
    description    jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS rec_models_trained_idx ON rec_models (trained_at DESC);

-- the recommender's engines reload their copy of the catalog when this moves
CREATE INDEX IF NOT EXISTS search_docs_indexed_idx ON search_docs (indexed_at);
