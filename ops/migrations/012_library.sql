-- A user's library: state and sync feed in one table, the observed-remove tags behind the
-- watchlist and history, and the op ids already applied (idempotency).

-- One row per user: the change counter the sync cursor counts in, the newest purged
-- tombstone (an older cursor cannot be served: 410), and when each entity last changed.
CREATE TABLE IF NOT EXISTS library_users (
    user_id    text   PRIMARY KEY,
    seq        bigint NOT NULL DEFAULT 0,
    purged_seq bigint NOT NULL DEFAULT 0,
    activity   jsonb  NOT NULL DEFAULT '{}'
);

-- The visible state of each (entity, key): a watchlist entry, a title's watch history, a
-- rating, the services or the settings (key ''), an up-next hide. A removal keeps the row
-- as a tombstone (deleted) with a new seq, so "removed" differs from "never there" and
-- syncs like any other change; tombstones go after the retention (library_users.purged_seq).
CREATE TABLE IF NOT EXISTS library_items (
    user_id    text        NOT NULL,
    entity     text        NOT NULL,
    key        text        NOT NULL,
    seq        bigint      NOT NULL,
    deleted    boolean     NOT NULL,
    value      jsonb,
    stamp      text        NOT NULL,
    op_id      text        NOT NULL,
    device_id  text        NOT NULL,
    changed_at timestamptz NOT NULL,
    PRIMARY KEY (user_id, entity, key)
);
-- the sync feed: a user's changes after a cursor, in order
CREATE UNIQUE INDEX IF NOT EXISTS library_items_feed_idx ON library_items (user_id, seq);

-- Each add to an observed-remove set (watchlist, history) with its tag (the op id); a
-- remove tombstones the tags it observed. seq: the user's change counter when the add was
-- stored, which is what a device that pulled up to a cursor can have seen.
CREATE TABLE IF NOT EXISTS library_tags (
    user_id   text        NOT NULL,
    entity    text        NOT NULL,
    key       text        NOT NULL,
    tag       text        NOT NULL,
    stamp     text        NOT NULL,
    seq       bigint      NOT NULL,
    at        timestamptz NOT NULL,
    device_id text        NOT NULL,
    removed   boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (user_id, entity, key, tag)
);

-- Op ids already folded (client op ids, Idempotency-Keys): a repeat changes nothing.
CREATE TABLE IF NOT EXISTS library_ops (
    user_id text NOT NULL,
    op_id   text NOT NULL,
    PRIMARY KEY (user_id, op_id)
);

-- Whether the current play of a title may still become a watch (history). A play that
-- crosses the user's watched threshold records one watch and disarms; going back under
-- the resume threshold (starting over) arms it again, so rewatches count. The playback
-- projector decides and appends WatchRecorded, so the library's feed comes from one log.
ALTER TABLE playback_positions ADD COLUMN IF NOT EXISTS armed boolean NOT NULL DEFAULT true;
