"""How much one user's facts about one title say about their taste. No I/O.

The interactions projection keeps facts (finished twice, rated 8, on the watchlist, three
impressions and no click, not interested); this module turns them into one signed weight.
Keeping the weights here, not in the rows, means a change of weights needs no replay.

The order of strength follows what a viewer's actions cost them: finishing a title >
rating it well > putting it on the watchlist > starting it > opening its page > being
shown it and passing. Not interested and a low rating are negative: they push similar
titles down in the item-item models, and the title itself is never recommended again.
Older facts count less (half-life ``HALF_LIFE_DAYS``) but never below ``DECAY_FLOOR``:
what someone loved years ago still says something about them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

FINISHED = 4.0
REWATCH = 1.0  # each watch after the first, up to MAX_REWATCHES
MAX_REWATCHES = 2
STARTED = 1.5  # started and not finished
WATCHLISTED = 2.0
CLICK = 0.5  # click, detail view, trailer, share
MAX_CLICKS = 4
IMPRESSION_PASSED = -0.05  # shown and not clicked: a weak negative
MAX_PASSED = 6
MORE_LIKE_THIS = 4.0
NOT_INTERESTED = -4.0
HALF_LIFE_DAYS = 365.0
DECAY_FLOOR = 0.35
#: ratings are 1..10; 7 and up is a like, 4 and under a dislike, between says little
LIKE_FROM = 7
DISLIKE_UP_TO = 4


@dataclass(frozen=True, slots=True)
class Facts:
    """One user's facts about one title (a row of rec_interactions)."""

    finished: int = 0
    started: bool = False
    rating: int | None = None
    watchlisted: bool = False
    clicks: int = 0
    impressions: int = 0
    not_interested: bool = False
    more_like_this: bool = False


def rating_weight(rating: int) -> float:
    """+1 .. +4 for 7..10, -1 .. -4 for 4..1, 0 between."""
    if rating >= LIKE_FROM:
        return 1.0 + (rating - LIKE_FROM)
    if rating <= DISLIKE_UP_TO:
        return -1.0 - (DISLIKE_UP_TO - rating)
    return 0.0


def raw_weight(f: Facts) -> float:
    """The facts' weight before time decay. Explicit feedback decides the sign: not
    interested, or a dislike, is negative whatever the plays say."""
    if f.not_interested:
        return NOT_INTERESTED
    if f.rating is not None and f.rating <= DISLIKE_UP_TO:
        return rating_weight(f.rating)
    w = 0.0
    if f.finished > 0:
        w += FINISHED + REWATCH * min(f.finished - 1, MAX_REWATCHES)
    elif f.started:
        w += STARTED
    if f.rating is not None:
        w += rating_weight(f.rating)
    if f.watchlisted:
        w += WATCHLISTED
    if f.more_like_this:
        w += MORE_LIKE_THIS
    w += CLICK * min(f.clicks, MAX_CLICKS)
    if f.clicks == 0 and w == 0.0:
        w += IMPRESSION_PASSED * min(f.impressions, MAX_PASSED)
    return w


def decay(last_at: datetime, now: datetime) -> float:
    age_days = max((now - last_at).total_seconds(), 0.0) / 86400.0
    return float(max(0.5 ** (age_days / HALF_LIFE_DAYS), DECAY_FLOOR))


def weight(f: Facts, last_at: datetime, now: datetime) -> float:
    return raw_weight(f) * decay(last_at, now)


def excluded(f: Facts) -> bool:
    """Never recommend what the user finished, is watching, rated (they have seen it) or
    said no to. A watchlisted title may come back: it is one they mean to watch."""
    return f.finished > 0 or f.started or f.not_interested or f.rating is not None


def explicit(f: Facts) -> float:
    """The part of the facts the user said outright (+1 like, -1 not for me, 0 neither):
    what the per-user correction learns from."""
    if f.not_interested or (f.rating is not None and f.rating <= DISLIKE_UP_TO):
        return -1.0
    if f.more_like_this or (f.rating is not None and f.rating >= LIKE_FROM):
        return 1.0
    return 0.0
