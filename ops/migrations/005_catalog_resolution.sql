-- Entity resolution's memory: every platform record it has placed, by blocking key.
CREATE TABLE IF NOT EXISTS resolution_members (
    platform     text NOT NULL,
    platform_id  text NOT NULL,
    block_key    text NOT NULL,
    cluster_id   text NOT NULL,
    kind         text NOT NULL,
    titles       text[] NOT NULL,
    year         int,
    runtime_min  int,
    imdb_id      text,
    tmdb_id      text,
    raw_hash     text NOT NULL,
    PRIMARY KEY (platform, platform_id)
);
CREATE INDEX IF NOT EXISTS resolution_members_block_idx
    ON resolution_members (block_key, year);
CREATE INDEX IF NOT EXISTS resolution_members_cluster_idx ON resolution_members (cluster_id);
CREATE INDEX IF NOT EXISTS resolution_members_imdb_idx ON resolution_members (imdb_id)
    WHERE imdb_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS resolution_members_tmdb_idx ON resolution_members (tmdb_id)
    WHERE tmdb_id IS NOT NULL;

-- The canonical catalog's sources: one row per platform record (and per editorial
-- upsert, platform 'editorial'), with the content entity it belongs to now.
CREATE TABLE IF NOT EXISTS platform_titles (
    platform       text NOT NULL,
    platform_id    text NOT NULL,
    cluster_id     text NOT NULL,
    content_id     text NOT NULL,
    raw_hash       text,
    kind           text NOT NULL,
    title          text NOT NULL,
    original_title text,
    year           int,
    runtime_min    int,
    genres         text[] NOT NULL DEFAULT '{}',
    overview       text,
    language       text,
    imdb_id        text,
    tmdb_id        text,
    series_id      text,
    season         int,
    episode        int,
    web_url        text,
    app_url        text,
    first_seen     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    PRIMARY KEY (platform, platform_id)
);
CREATE INDEX IF NOT EXISTS platform_titles_content_idx ON platform_titles (content_id);
CREATE INDEX IF NOT EXISTS platform_titles_cluster_idx ON platform_titles (cluster_id);
CREATE INDEX IF NOT EXISTS platform_titles_series_idx ON platform_titles (series_id)
    WHERE series_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS platform_titles_imdb_idx ON platform_titles (imdb_id)
    WHERE imdb_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS platform_titles_tmdb_idx ON platform_titles (tmdb_id)
    WHERE tmdb_id IS NOT NULL;

-- A merged content id reads as its survivor (kept flat: into_id is never merged itself).
CREATE TABLE IF NOT EXISTS content_merges (
    merged_id  text PRIMARY KEY,
    into_id    text NOT NULL,
    reason     text NOT NULL,
    merged_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS content_merges_into_idx ON content_merges (into_id);

ALTER TABLE content ADD COLUMN IF NOT EXISTS platforms text[] NOT NULL DEFAULT '{}';
ALTER TABLE content ADD COLUMN IF NOT EXISTS source_count int NOT NULL DEFAULT 1;
ALTER TABLE content ADD COLUMN IF NOT EXISTS completeness real NOT NULL DEFAULT 0;
ALTER TABLE content ADD COLUMN IF NOT EXISTS agreement real NOT NULL DEFAULT 1;
ALTER TABLE content ADD COLUMN IF NOT EXISTS first_seen timestamptz;

-- Offers per platform record and region (the availability projection).
CREATE TABLE IF NOT EXISTS availability (
    platform        text NOT NULL,
    platform_id     text NOT NULL,
    region          text NOT NULL,
    offer_type      text NOT NULL,
    quality         text NOT NULL,
    price           numeric(12, 2),
    currency        text,
    available_from  timestamptz,
    available_until timestamptz,
    web_url         text,
    app_url         text,
    raw_hash        text NOT NULL,
    updated_at      timestamptz NOT NULL,
    PRIMARY KEY (platform, platform_id, region, offer_type)
);
CREATE INDEX IF NOT EXISTS availability_new_idx ON availability (region, available_from);
CREATE INDEX IF NOT EXISTS availability_leaving_idx ON availability (region, available_until)
    WHERE available_until IS NOT NULL;

CREATE INDEX IF NOT EXISTS playback_positions_content_idx ON playback_positions (content_id);
