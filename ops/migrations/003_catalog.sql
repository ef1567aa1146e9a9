CREATE TABLE IF NOT EXISTS content (
    content_id     text PRIMARY KEY,
    kind           text NOT NULL CHECK (kind IN ('movie', 'series', 'episode')),
    title          text NOT NULL,
    original_title text,
    year           int,
    runtime_min    int,
    genres         text[] NOT NULL DEFAULT '{}',
    overview       text,
    imdb_id        text,
    tmdb_id        text,
    series_id      text,
    season         int,
    episode        int,
    updated_at     timestamptz NOT NULL,
    last_event_id  text
);
CREATE INDEX IF NOT EXISTS content_imdb_idx ON content (imdb_id) WHERE imdb_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS content_tmdb_idx ON content (tmdb_id) WHERE tmdb_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS content_series_idx ON content (series_id, season, episode)
    WHERE series_id IS NOT NULL;
