"""Up next: what to watch now, read across the playback and library read models.

Continue-watching by the user's own resume rules (``playback_positions``), merged with the
next episode of each series in progress (history in ``library_items``), minus the titles
the user hid; newest first.
"""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

from core.ids import iso_z
from domain.library import ResumeRules
from projections.base import fetch_rows

_CONTINUE_SQL = """
SELECT p.content_id, c.title, c.kind, c.series_id, c.season, c.episode, p.position_s,
       p.duration_s, p.updated_at
  FROM playback_positions p LEFT JOIN content c USING (content_id)
 WHERE p.user_id = %(user)s AND p.duration_s > 0
   AND p.position_s * 100 / p.duration_s >= %(min_pct)s
   AND p.position_s * 100 / p.duration_s <= %(watched_pct)s
"""

# The next episode of each series in progress: after the last one watched (by time), the
# first not yet watched; specials (season 0) are neither a place in a series nor next.
_NEXT_SQL = """
WITH watched AS (
  SELECT c.content_id, c.series_id, c.season, c.episode,
         (i.value->>'last_watched_at')::timestamptz AS at
    FROM library_items i JOIN content c ON c.content_id = i.key
   WHERE i.user_id = %(user)s AND i.entity = 'history' AND NOT i.deleted
     AND c.kind = 'episode' AND c.series_id IS NOT NULL AND c.season > 0
), last AS (
  SELECT DISTINCT ON (series_id) series_id, season, episode, at FROM watched
   ORDER BY series_id, at DESC, season DESC, episode DESC
)
SELECT n.content_id, n.title, s.title, n.season, n.episode, l.at, l.series_id
  FROM last l
  JOIN LATERAL (
    SELECT e.content_id, e.title, e.season, e.episode FROM content e
     WHERE e.series_id = l.series_id AND e.kind = 'episode' AND e.season > 0
       AND (e.season, e.episode) > (l.season, l.episode)
       AND e.content_id NOT IN (SELECT content_id FROM watched)
     ORDER BY e.season, e.episode LIMIT 1
  ) n ON true
  LEFT JOIN content s ON s.content_id = l.series_id
"""


async def up_next(
    conn: AsyncConnection[Any], user_id: str, rules: ResumeRules
) -> list[dict[str, Any]]:
    """Continue-watching by the user's own resume rules, merged with the next episode of
    each series in progress, minus what the user hid; newest first."""
    params = {
        "user": user_id,
        "min_pct": rules.min_resume_pct,
        "watched_pct": rules.watched_pct,
    }
    hidden = {
        r[0]
        for r in await fetch_rows(
            conn,
            "SELECT key FROM library_items WHERE user_id = %s AND entity = 'up_next'"
            " AND NOT deleted",
            (user_id,),
        )
    }
    out: dict[str, dict[str, Any]] = {}
    for cid, title, kind, series, season, episode, pos, dur, at in await fetch_rows(
        conn, _CONTINUE_SQL, params
    ):
        out[cid] = {
            "content_id": cid, "reason": "continue", "title": title, "kind": kind,
            "series_id": series, "season": season, "episode": episode,
            "position_s": pos, "duration_s": dur, "progress": round(pos / dur, 4),
            "at": at,
        }  # fmt: skip
    for cid, title, series_title, season, episode, at, series in await fetch_rows(
        conn, _NEXT_SQL, params
    ):
        if any(i["series_id"] == series for i in out.values()):
            continue  # an episode of it is half watched: that one comes first
        out[cid] = {
            "content_id": cid, "reason": "next_episode", "title": title, "kind": "episode",
            "series_id": series, "series_title": series_title, "season": season,
            "episode": episode, "position_s": 0.0, "duration_s": None, "progress": None,
            "at": at,
        }  # fmt: skip
    items = [i for i in out.values() if i["content_id"] not in hidden]
    items.sort(key=lambda i: (i["at"], i["content_id"]), reverse=True)
    for i in items:
        i["at"] = iso_z(i["at"])
    return items
