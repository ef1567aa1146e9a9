-- Notifications (docs/notifications.md), folded from the notifications topic only: every
-- row comes from a NotificationCreated the projector or its background step decided, so a
-- replay rebuilds the same list without asking any other read model.
CREATE TABLE IF NOT EXISTS notifications (
    user_id          text        NOT NULL,
    -- the user's counter at the fold: newest first is seq descending, and a cursor is one
    seq              bigint      NOT NULL,
    notification_id  text        NOT NULL,
    kind             text        NOT NULL
                     CHECK (kind IN ('available', 'leaving', 'new_episode', 'broadcast')),
    -- once per (user, kind, key): the title for catalog kinds, the broadcast id otherwise
    key              text        NOT NULL,
    content_id       text,
    title            text        NOT NULL,
    body             text        NOT NULL,
    data             jsonb       NOT NULL DEFAULT '{}',
    created_at       timestamptz NOT NULL,
    read_at          timestamptz,
    PRIMARY KEY (user_id, seq),
    UNIQUE (user_id, kind, key)
);
CREATE INDEX IF NOT EXISTS notifications_unread_idx ON notifications (user_id, seq)
    WHERE read_at IS NULL;

-- per user: the counter, the preferences and the digest's progress
CREATE TABLE IF NOT EXISTS notification_users (
    user_id     text   PRIMARY KEY,
    seq         bigint NOT NULL DEFAULT 0,
    -- kind -> false for a kind the user turned off (absent: on)
    kinds       jsonb  NOT NULL DEFAULT '{}',
    digest      text   NOT NULL DEFAULT 'off' CHECK (digest IN ('off', 'daily')),
    -- the UTC day the last digest went out, and the newest notification it covered
    digest_day  date,
    digest_seq  bigint NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS notification_users_digest_idx ON notification_users (digest_day)
    WHERE digest = 'daily';

-- The decider's own memory, each folded from one catalog topic, so "what is new" never
-- depends on how far another projector has got: the (region, offer type) pairs each
-- platform record offers now, the entity each record belongs to, and the episodes seen.
CREATE TABLE IF NOT EXISTS notification_offers (
    platform     text NOT NULL,
    platform_id  text NOT NULL,
    region       text NOT NULL,
    offer_type   text NOT NULL,
    PRIMARY KEY (platform, platform_id, region, offer_type)
);
CREATE TABLE IF NOT EXISTS notification_records (
    platform     text NOT NULL,
    platform_id  text NOT NULL,
    content_id   text NOT NULL,
    PRIMARY KEY (platform, platform_id)
);
CREATE TABLE IF NOT EXISTS notification_episodes (
    series_id  text NOT NULL,
    season     int  NOT NULL,
    episode    int  NOT NULL,
    PRIMARY KEY (series_id, season, episode)
);

-- who has a title on their watchlist, without scanning every library: the decider asks
-- this for each title that arrives
CREATE INDEX IF NOT EXISTS library_items_watchers_idx ON library_items (key, user_id)
    WHERE entity = 'watchlist' AND NOT deleted;
