-- Discovery administration: ranking profiles and search analytics.

-- Every version of every ranking profile (projections/ranking.py). The API picks the
-- version (current + 1); the first event with a given (profile, version) wins, so a
-- concurrent writer that picked the same version changes nothing. event_id tells the API
-- whose write won.
CREATE TABLE IF NOT EXISTS ranking_profiles (
    profile     text        NOT NULL,
    version     int         NOT NULL CHECK (version > 0),
    weights     jsonb       NOT NULL,
    description text        NOT NULL DEFAULT '',
    set_by      text,
    set_at      timestamptz NOT NULL,
    event_id    text,
    PRIMARY KEY (profile, version)
);

-- Searches seen, one row each (projections/search_analytics.py): the first SearchPerformed
-- with a search_id counts, a repeat does not. Clicks find their query and day here.
CREATE TABLE IF NOT EXISTS searches (
    search_id        text        PRIMARY KEY,
    day              date        NOT NULL,
    normalized_query text        NOT NULL,
    result_count     int         NOT NULL,
    at               timestamptz NOT NULL,
    -- clicks on this search's results so far: the first one makes it a clicked search
    clicks           int         NOT NULL DEFAULT 0
);

-- Per UTC day and normalized query. A click counts on its search's day and query;
-- clicked_searches counts searches with at least one click.
CREATE TABLE IF NOT EXISTS search_queries_daily (
    day                  date   NOT NULL,
    normalized_query     text   NOT NULL,
    searches             bigint NOT NULL DEFAULT 0,
    zero_result_searches bigint NOT NULL DEFAULT 0,
    clicks               bigint NOT NULL DEFAULT 0,
    clicked_searches     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, normalized_query)
);

-- Per UTC day and 1-based result position: impressions (positions 1..10 of each search's
-- first page) and clicks (every position, also for clicks whose search was never seen).
CREATE TABLE IF NOT EXISTS search_position_daily (
    day         date   NOT NULL,
    position    int    NOT NULL CHECK (position > 0),
    impressions bigint NOT NULL DEFAULT 0,
    clicks      bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, position)
);
