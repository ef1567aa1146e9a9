"""Builders shared by tests: real events, real logs, real stores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from core.events import Event

T0 = datetime(2026, 3, 1, 20, 0, tzinfo=UTC)


def play(
    user: str,
    content: str,
    position: float,
    duration: float | None = 6000.0,
    *,
    kind: str = "PlaybackProgressed",
    at: datetime | None = None,
    seconds: int = 0,
    device: str = "tv",
) -> Event:
    when = at or (T0 + timedelta(seconds=seconds))
    return Event(
        kind,
        user,
        {
            "user_id": user,
            "content_id": content,
            "device_id": device,
            "position_s": position,
            "duration_s": duration,
            "occurred_at": when,
        },
        occurred_at=when,
    )


def content(cid: str, title: str, **extra: Any) -> Event:
    payload = {
        "content_id": cid,
        "kind": "movie",
        "title": title,
        "original_title": None,
        "year": 1995,
        "runtime_min": 100,
        "genres": ["Drama"],
        "overview": None,
        "external_ids": {"imdb": None, "tmdb": None},
        "series_id": None,
        "season": None,
        "episode": None,
    }
    payload.update(extra)
    return Event("ContentUpserted", cid, payload)
