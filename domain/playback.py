"""Playback rules: what counts as in progress, watched, or nonsense. No I/O.

Thresholds follow Jellyfin's defaults: a title is resumable once at least 5 %
has been played and until 90 %; past 90 % it counts as watched and leaves
continue-watching. Without a known duration nothing can be judged, so the
position is kept but the title is not offered for resuming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

MIN_RESUME_PCT = 5.0
MAX_RESUME_PCT = 90.0
#: a player may report a position slightly past its own duration (rounding, credits)
POSITION_SLACK_S = 30.0
#: nothing on any platform runs longer than this; longer durations are corrupt data
MAX_DURATION_S = 48 * 3600.0

#: heartbeats a streaming device may miss before its session ends by itself
MISSED_HEARTBEATS = 3

EVENT_KINDS = {
    "start": "PlaybackStarted",
    "progress": "PlaybackProgressed",
    "stop": "PlaybackStopped",
}


class ProgressState(StrEnum):
    UNKNOWN = "unknown"  # duration not known
    NOT_STARTED = "not_started"  # below 5 %
    IN_PROGRESS = "in_progress"
    WATCHED = "watched"  # above 90 %


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    message: str


def check_position(position_s: float, duration_s: float | None) -> Violation | None:
    """Why a reported position cannot be right, or None when it is plausible."""
    if not math.isfinite(position_s) or position_s < 0:
        return Violation("position_s", "must be a finite number >= 0")
    if duration_s is not None:
        if not math.isfinite(duration_s) or duration_s <= 0:
            return Violation("duration_s", "must be a finite number > 0 when given")
        if duration_s > MAX_DURATION_S:
            return Violation("duration_s", f"must be at most {MAX_DURATION_S:.0f} seconds")
        if position_s > duration_s + POSITION_SLACK_S:
            return Violation("position_s", "must not exceed duration_s")
    elif position_s > MAX_DURATION_S:
        return Violation("position_s", f"must be at most {MAX_DURATION_S:.0f} seconds")
    return None


def progress_ratio(position_s: float, duration_s: float | None) -> float | None:
    if not duration_s or duration_s <= 0:
        return None
    return max(0.0, min(1.0, position_s / duration_s))


def classify(
    position_s: float,
    duration_s: float | None,
    min_pct: float = MIN_RESUME_PCT,
    max_pct: float = MAX_RESUME_PCT,
) -> ProgressState:
    """Where a position stands, by the defaults or by a user's own resume rules."""
    ratio = progress_ratio(position_s, duration_s)
    if ratio is None:
        return ProgressState.UNKNOWN
    pct = ratio * 100.0
    if pct < min_pct:
        return ProgressState.NOT_STARTED
    if pct > max_pct:
        return ProgressState.WATCHED
    return ProgressState.IN_PROGRESS


def resume_position(position_s: float, duration_s: float | None) -> float:
    """Where a player should start: the saved position while in progress, else the start."""
    return position_s if classify(position_s, duration_s) is ProgressState.IN_PROGRESS else 0.0
