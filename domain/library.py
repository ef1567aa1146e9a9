"""A user's library: what each op means, what makes it valid, the event it becomes. No I/O.

The ops are the same whether they come one at a time (REST) or in a device's offline
batch (``POST /v1/sync``): each becomes one event on ``library.events`` keyed by the user,
stamped with a hybrid logical clock (domain/sync/hlc.py). The library projector folds
them: watchlist and history as observed-remove sets, ratings, services and settings as
last-writer-wins registers, up-next hides as a set.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from domain.catalog import OFFER_TYPES, PLATFORMS

#: op kind -> (entity, event type)
OPS: dict[str, tuple[str, str]] = {
    "watchlist.add": ("watchlist", "WatchlistItemAdded"),
    "watchlist.remove": ("watchlist", "WatchlistItemRemoved"),
    "history.add": ("history", "WatchRecorded"),
    "history.remove": ("history", "WatchesRemoved"),
    "rating.set": ("rating", "RatingSet"),
    "rating.remove": ("rating", "RatingRemoved"),
    "services.set": ("services", "ServicesSet"),
    "settings.set": ("settings", "LibrarySettingsSet"),
    "up_next.hide": ("up_next", "UpNextHidden"),
}
ENTITIES = ("watchlist", "history", "rating", "services", "settings", "up_next")
#: entities that are observed-remove sets of adds (each add a tag)
SET_ENTITIES = frozenset({"watchlist", "history"})
#: ops that need no title
_NO_CONTENT = frozenset({"services.set", "settings.set"})
#: the most ops one sync request may carry (more answers 413)
MAX_BATCH = 1000
#: how long a removal stays in the sync feed before it is purged (days)
TOMBSTONE_DAYS = 90
RATING_MIN, RATING_MAX = 1, 10
_REGION = re.compile(r"^[A-Z]{2}$")


class OpError(ValueError):
    """An op that cannot be applied; ``field`` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class ResumeRules:
    """When a play counts, resumes and is watched (Jellyfin's defaults: 5 %, 90 %, 300 s)."""

    min_resume_pct: float = 5.0
    watched_pct: float = 90.0
    #: a play shorter than this leaves no trace (an accidental play is not history)
    min_play_s: float = 300.0

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


DEFAULT_RULES = ResumeRules()


def play_counts(
    rules: ResumeRules, position_s: float, duration_s: float | None, armed: bool
) -> tuple[bool, bool]:
    """(is this report a watch, armed after it) for one playback report. A play becomes a
    watch once it passes ``watched_pct`` having run ``min_play_s``; it counts once, until
    the viewer starts over (under ``min_resume_pct``), so a rewatch counts again."""
    if not duration_s or duration_s <= 0:
        return False, armed  # nothing can be judged without a duration
    pct = 100.0 * position_s / duration_s
    if armed and pct > rules.watched_pct and position_s >= rules.min_play_s:
        return True, False
    if not armed and pct < rules.min_resume_pct:
        return False, True
    return False, armed


def needs_content(kind: str) -> bool:
    return kind not in _NO_CONTENT


def entity_of(kind: str) -> str:
    return OPS[kind][0]


def check_kind(kind: Any) -> str:
    if not isinstance(kind, str) or kind not in OPS:
        raise OpError("kind", f"unknown op kind {kind!r}; expected one of: {', '.join(OPS)}")
    return kind


def rating(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OpError("value.rating", "must be an integer")
    if not RATING_MIN <= value <= RATING_MAX:
        raise OpError("value.rating", f"must be between {RATING_MIN} and {RATING_MAX}")
    return value


def services(value: Any) -> dict[str, Any]:
    """``{"region": "US", "platforms": [...], "offer_types": [...]?}``, checked and sorted."""
    if not isinstance(value, dict):
        raise OpError("value", "must be an object with region and platforms")
    extra = set(value) - {"region", "platforms", "offer_types"}
    if extra:
        raise OpError(f"value.{sorted(extra)[0]}", "is not a field of services")
    region = value.get("region")
    if not isinstance(region, str) or not _REGION.match(region.upper()):
        raise OpError("value.region", "must be an ISO 3166-1 alpha-2 code such as US")
    plats = value.get("platforms")
    if not isinstance(plats, list) or not all(isinstance(p, str) for p in plats):
        raise OpError("value.platforms", "must be a list of platform names")
    unknown = [p for p in plats if p not in PLATFORMS]
    if unknown:
        raise OpError(
            "value.platforms",
            f"unknown platform {unknown[0]!r}; expected some of: {', '.join(PLATFORMS)}",
        )
    offers = value.get("offer_types") or []
    if not isinstance(offers, list) or not all(isinstance(o, str) for o in offers):
        raise OpError("value.offer_types", "must be a list of offer types")
    bad = [o for o in offers if o not in OFFER_TYPES]
    if bad:
        raise OpError(
            "value.offer_types",
            f"unknown offer type {bad[0]!r}; expected some of: {', '.join(OFFER_TYPES)}",
        )
    return {
        "region": region.upper(),
        "platforms": sorted(set(plats)),
        "offer_types": sorted(set(offers)),
    }


def settings(value: Any, current: ResumeRules = DEFAULT_RULES) -> ResumeRules:
    """Resume rules after a (partial) update; fields left out keep their current value."""
    if not isinstance(value, dict):
        raise OpError("value", "must be an object of settings")
    known = ResumeRules.__dataclass_fields__
    extra = set(value) - set(known)
    if extra:
        raise OpError(
            f"value.{sorted(extra)[0]}", f"is not a setting; settings: {', '.join(known)}"
        )
    merged = current.as_dict()
    for name, v in value.items():
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise OpError(f"value.{name}", "must be a number")
        merged[name] = float(v)
    rules = ResumeRules(**merged)
    if not 0 <= rules.min_resume_pct < rules.watched_pct <= 100:
        raise OpError("value.watched_pct", "must satisfy 0 <= min_resume_pct < watched_pct <= 100")
    if not 0 <= rules.min_play_s <= 3600:
        raise OpError("value.min_play_s", "must be between 0 and 3600 seconds")
    return rules


def remover_saw(
    tag_seq: int, tag_device: str, tag_stamp: str, *, seen: int | None, device: str, stamp: str
) -> bool:
    """Which adds a remove observed (and so removes): everything stored when the device
    last pulled (``seen``, a change sequence), its own earlier adds, or, with no ``seen``
    (an online command), everything stored. An add the device could not have seen (made
    on another device after its last pull) is concurrent, and survives."""
    return seen is None or tag_seq <= seen or (tag_device == device and tag_stamp < stamp)


def payload(
    kind: str,
    *,
    user_id: str,
    op_id: str,
    device_id: str,
    stamp: str,
    content_id: str | None,
    value: dict[str, Any],
    at_ms: int,
    seen: int | None,
) -> tuple[str, dict[str, Any]]:
    """(event type, payload) for an op whose value the checks above already took."""
    event_type = OPS[kind][1]
    p: dict[str, Any] = {
        "user_id": user_id,
        "op_id": op_id,
        "device_id": device_id,
        "stamp": stamp,
    }
    if needs_content(kind):
        p["content_id"] = content_id
    if kind in ("watchlist.remove", "history.remove"):
        p["seen"] = seen
    elif kind == "history.add":
        p["watched_at"] = value.get("watched_at_ms", at_ms)
        p["source"] = value.get("source", "manual")
    elif kind == "rating.set":
        p["rating"] = value["rating"]
    elif kind in ("services.set", "settings.set"):
        p.update(value)
    return event_type, p
