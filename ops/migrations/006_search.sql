-- Search documents: one row per canonical title, derived from the catalog projection
-- (content, platform_titles, availability) by the search indexer. See docs/search.md.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE TABLE IF NOT EXISTS search_docs (
    content_id    text PRIMARY KEY,
    kind          text NOT NULL,
    title         text NOT NULL,
    title_norm    text NOT NULL,            -- lower-cased, accents and punctuation folded
    original_title text,
    year          int,
    genres        text[] NOT NULL DEFAULT '{}',
    people        text[] NOT NULL DEFAULT '{}',
    rating        text,                     -- parental rating when a source gives one
    imdb_id       text,
    tmdb_id       text,
    -- "region|platform|offer_type" keys with '*' wildcards, for offers not yet ended:
    -- the same array filters the full-text, trigram and vector retrievers
    offer_keys    text[] NOT NULL DEFAULT '{}',
    platforms     text[] NOT NULL DEFAULT '{}',
    quality       real NOT NULL DEFAULT 0,
    popularity    real NOT NULL DEFAULT 0,  -- log-scaled plays, 0..1
    first_seen    timestamptz,
    tsv           tsvector NOT NULL,
    embed_text    text NOT NULL,
    text_hash     text NOT NULL,            -- sha256 of embed_text
    embedded_hash text,                     -- text_hash the embedding was computed from
    indexed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS search_docs_tsv_idx ON search_docs USING gin (tsv);
-- GiST, not GIN: trigram retrieval orders by word-similarity distance (KNN, `<<->`), so it
-- reads the nearest titles first instead of scoring every title sharing a trigram
CREATE INDEX IF NOT EXISTS search_docs_trgm_idx ON search_docs USING gist (title_norm gist_trgm_ops);
CREATE INDEX IF NOT EXISTS search_docs_prefix_idx ON search_docs (title_norm text_pattern_ops);
CREATE INDEX IF NOT EXISTS search_docs_offers_idx ON search_docs USING gin (offer_keys);
CREATE INDEX IF NOT EXISTS search_docs_genres_idx ON search_docs USING gin (genres);
CREATE INDEX IF NOT EXISTS search_docs_browse_idx
    ON search_docs (popularity DESC, quality DESC, content_id DESC);
CREATE INDEX IF NOT EXISTS search_docs_pending_idx ON search_docs (popularity DESC)
    WHERE embedded_hash IS DISTINCT FROM text_hash;

-- Titles whose search document must be rebuilt. Writers bump seq; the indexer deletes a
-- row only if seq is still the one it read, so a change that lands mid-rebuild is kept.
CREATE SEQUENCE IF NOT EXISTS search_queue_seq;
CREATE TABLE IF NOT EXISTS search_queue (
    content_id text PRIMARY KEY,
    seq        bigint NOT NULL DEFAULT nextval('search_queue_seq')
);

-- Each trigger names its transition table `changed` (new rows, or old rows for deletes),
-- so one function serves inserts, updates and deletes.
CREATE OR REPLACE FUNCTION search_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_queue (content_id)
        SELECT DISTINCT content_id FROM changed WHERE content_id IS NOT NULL
        ON CONFLICT (content_id) DO UPDATE SET seq = nextval('search_queue_seq');
    RETURN NULL;
END $$;

-- availability rows belong to platform records; their entity comes from platform_titles
CREATE OR REPLACE FUNCTION search_enqueue_offers() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_queue (content_id)
        SELECT DISTINCT t.content_id FROM changed c
        JOIN platform_titles t ON t.platform = c.platform AND t.platform_id = c.platform_id
        ON CONFLICT (content_id) DO UPDATE SET seq = nextval('search_queue_seq');
    RETURN NULL;
END $$;

-- a rebuilt catalog starts its search documents from nothing too
CREATE OR REPLACE FUNCTION search_reset() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM search_queue;
    DELETE FROM search_docs;
    RETURN NULL;
END $$;

DROP TRIGGER IF EXISTS content_search_ins ON content;
CREATE TRIGGER content_search_ins AFTER INSERT ON content
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION search_enqueue();
DROP TRIGGER IF EXISTS content_search_upd ON content;
CREATE TRIGGER content_search_upd AFTER UPDATE ON content
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION search_enqueue();
DROP TRIGGER IF EXISTS content_search_del ON content;
CREATE TRIGGER content_search_del AFTER DELETE ON content
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION search_enqueue();
DROP TRIGGER IF EXISTS content_search_trunc ON content;
CREATE TRIGGER content_search_trunc AFTER TRUNCATE ON content
    FOR EACH STATEMENT EXECUTE FUNCTION search_reset();

DROP TRIGGER IF EXISTS titles_search_ins ON platform_titles;
CREATE TRIGGER titles_search_ins AFTER INSERT ON platform_titles
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION search_enqueue();
DROP TRIGGER IF EXISTS titles_search_upd_new ON platform_titles;
CREATE TRIGGER titles_search_upd_new AFTER UPDATE ON platform_titles
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION search_enqueue();
DROP TRIGGER IF EXISTS titles_search_upd_old ON platform_titles;
CREATE TRIGGER titles_search_upd_old AFTER UPDATE ON platform_titles
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION search_enqueue();
DROP TRIGGER IF EXISTS titles_search_del ON platform_titles;
CREATE TRIGGER titles_search_del AFTER DELETE ON platform_titles
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT EXECUTE FUNCTION search_enqueue();

DROP TRIGGER IF EXISTS offers_search_ins ON availability;
CREATE TRIGGER offers_search_ins AFTER INSERT ON availability
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION search_enqueue_offers();
DROP TRIGGER IF EXISTS offers_search_upd ON availability;
CREATE TRIGGER offers_search_upd AFTER UPDATE ON availability
    REFERENCING NEW TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION search_enqueue_offers();
DROP TRIGGER IF EXISTS offers_search_del ON availability;
CREATE TRIGGER offers_search_del AFTER DELETE ON availability
    REFERENCING OLD TABLE AS changed FOR EACH STATEMENT
    EXECUTE FUNCTION search_enqueue_offers();

-- offers cleared for a replay: every document's offer keys are rebuilt as they come back
CREATE OR REPLACE FUNCTION search_requeue_all() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO search_queue (content_id) SELECT content_id FROM search_docs
        ON CONFLICT (content_id) DO UPDATE SET seq = nextval('search_queue_seq');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS offers_search_trunc ON availability;
CREATE TRIGGER offers_search_trunc AFTER TRUNCATE ON availability
    FOR EACH STATEMENT EXECUTE FUNCTION search_requeue_all();

-- people and subject keywords an editorial source gives (ContentUpserted v2); search
-- indexes them, the canonical row does not carry them
ALTER TABLE platform_titles ADD COLUMN IF NOT EXISTS people text[] NOT NULL DEFAULT '{}';
ALTER TABLE platform_titles ADD COLUMN IF NOT EXISTS keywords text[] NOT NULL DEFAULT '{}';

-- filter fields pushed to a vector store that keeps them beside the vector (Qdrant)
ALTER TABLE search_docs ADD COLUMN IF NOT EXISTS payload_synced boolean NOT NULL DEFAULT FALSE;
-- when the indexer last queued titles whose offers started or ended with time
CREATE TABLE IF NOT EXISTS search_sweep (
    id         int PRIMARY KEY CHECK (id = 1),
    last_sweep timestamptz NOT NULL
);
