"""Moderation read model: reports, decisions and each decided title's state
(``moderation_reports``, ``moderation_decisions``, ``moderation_titles``), and the queue
query that joins them with the quality rules (domain/moderation.py).

A hide or unhide queues the title's search document for a rebuild in the same
transaction; the document builder leaves hidden titles out (projections/
search_documents.py), so the title leaves search, autocomplete and recommendations, and
a replay, folding the same decisions, leaves the same titles hidden.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from core.topics import MODERATION
from domain.moderation import ACTIONS, MAX_NOTE, REASONS, Flag, TitleFacts, flags, is_open
from projections.base import Envelope, PostgresOnly, RejectedEvent, fetch_rows


class ModerationProjector(PostgresOnly):
    name = "moderation"
    topics: tuple[str, ...] = (MODERATION.name,)
    tables: tuple[str, ...] = ("moderation_reports", "moderation_decisions", "moderation_titles")

    def check(self, event: Envelope) -> None:
        p = event.payload
        if event.event_type == "TitleReported":
            if p["reason"] not in REASONS:
                raise RejectedEvent(f"reason: one of {', '.join(REASONS)}")
            if len(p["note"]) > MAX_NOTE:
                raise RejectedEvent(f"note: at most {MAX_NOTE} characters")
        elif event.event_type == "ModerationDecided":
            if p["action"] not in ACTIONS:
                raise RejectedEvent(f"action: one of {', '.join(ACTIONS)}")
        else:
            raise RejectedEvent(f"moderation does not handle {event.event_type}")
        if event.key and event.key != p["content_id"]:
            raise RejectedEvent("record key must equal content_id")
        if any("\x00" in str(v) for v in p.values()):
            raise RejectedEvent("text must not contain NUL characters")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        reports = [
            (p["report_id"], p["content_id"], p["user_id"], p["reason"], p["note"], e.happened_at)
            for e in batch
            if e.event_type == "TitleReported"
            for p in (e.payload,)
        ]
        decided = sorted(
            (e for e in batch if e.event_type == "ModerationDecided"),
            key=lambda e: (e.partition, e.offset),
        )
        async with conn.cursor() as cur:
            if reports:
                await cur.executemany(
                    "INSERT INTO moderation_reports (report_id, content_id, user_id, reason,"
                    " note, reported_at) VALUES (%s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (report_id) DO NOTHING",
                    reports,
                )
            if not decided:
                return
            await cur.executemany(
                "INSERT INTO moderation_decisions (decision_id, content_id, action, admin_id,"
                " note, fields, decided_at) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (decision_id) DO NOTHING",
                [
                    (p["decision_id"], p["content_id"], p["action"], p["admin_id"], p["note"],
                     Jsonb(p["fields"]), e.happened_at)
                    for e in decided
                    for p in (e.payload,)
                ],
            )  # fmt: skip
            # one title's decisions are in one partition, in log order: the last one stands
            await cur.executemany(
                "INSERT INTO moderation_titles AS m (content_id, hidden, last_action,"
                " decided_by, decided_at) VALUES (%(id)s, %(action)s = 'hide', %(action)s,"
                " %(by)s, %(at)s) ON CONFLICT (content_id) DO UPDATE SET"
                " hidden = CASE %(action)s WHEN 'hide' THEN TRUE WHEN 'unhide' THEN FALSE"
                " ELSE m.hidden END, last_action = %(action)s, decided_by = %(by)s,"
                " decided_at = %(at)s",
                [
                    {"id": e.payload["content_id"], "action": e.payload["action"],
                     "by": e.payload["admin_id"], "at": e.happened_at}
                    for e in decided
                ],
            )  # fmt: skip
            shown = sorted(
                {e.payload["content_id"] for e in decided if e.payload["action"] != "approve"}
            )
            if shown:  # their search documents follow (hidden ones are left out)
                await cur.execute(
                    "INSERT INTO search_queue (content_id) SELECT unnest(%s::text[])"
                    " ON CONFLICT (content_id) DO UPDATE SET seq = nextval('search_queue_seq')",
                    (shown,),
                )


# -- queries -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueItem:
    content_id: str
    title: str
    year: int | None
    flags: list[Flag]
    reports: int
    reasons: list[str]
    hidden: bool
    last_action: str | None
    decided_at: datetime | None
    open: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "content_id": self.content_id,
            "title": self.title,
            "year": self.year,
            "flags": [{"rule": f.rule, "detail": f.detail} for f in self.flags],
            "reports": self.reports,
            "report_reasons": self.reasons,
            "hidden": self.hidden,
            "last_action": self.last_action,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "status": "open" if self.open else ("hidden" if self.hidden else "decided"),
        }


# Candidates: any title the rules might flag, reported, or decided. The rules themselves
# run in Python (domain/moderation.py); this only narrows the catalog to where they can.
_CANDIDATES = """
SELECT c.content_id, c.title, c.year, c.overview,
       (SELECT array_agg(DISTINCT t.year) FROM platform_titles t
         WHERE t.content_id = c.content_id AND t.year IS NOT NULL),
       (SELECT array_agg(DISTINCT t.title) FROM content_merges g
          JOIN platform_titles t ON t.content_id = c.content_id
         WHERE g.into_id = c.content_id),
       (SELECT array_agg(r.reported_at ORDER BY r.reported_at) FROM moderation_reports r
         WHERE r.content_id = c.content_id),
       (SELECT array_agg(DISTINCT r.reason) FROM moderation_reports r
         WHERE r.content_id = c.content_id),
       m.hidden, m.last_action, m.decided_at
  FROM content c
  LEFT JOIN moderation_titles m ON m.content_id = c.content_id
 WHERE c.kind IN ('movie', 'series')
   AND c.content_id > %(after)s
   AND (c.overview IS NULL OR btrim(c.overview) = ''
        OR m.content_id IS NOT NULL
        OR EXISTS (SELECT 1 FROM moderation_reports r WHERE r.content_id = c.content_id)
        OR EXISTS (SELECT 1 FROM content_merges g WHERE g.into_id = c.content_id)
        OR (SELECT max(t.year) - min(t.year) FROM platform_titles t
             WHERE t.content_id = c.content_id) > 1)
 ORDER BY c.content_id
 LIMIT %(scan)s
"""


def _item(r: tuple[Any, ...]) -> QueueItem:
    cid, title, year, overview, years, merged, reported, reasons, hidden, action, at = r
    found = flags(TitleFacts(title, overview, years or (), [m for m in merged or () if m]))
    return QueueItem(
        content_id=cid,
        title=title,
        year=year,
        flags=found,
        reports=len(reported or ()),
        reasons=sorted(reasons or ()),
        hidden=bool(hidden),
        last_action=action,
        decided_at=at,
        open=is_open(flagged=bool(found), reports_at=reported or (), decided_at=at),
    )


async def queue(
    conn: AsyncConnection[Any], *, status: str, after: str, limit: int
) -> tuple[list[QueueItem], str | None]:
    """Titles by content id after ``after``: ``open`` (waiting for an admin), ``hidden``
    or ``all`` (everything raised or decided); and the cursor for the next page."""
    out: list[QueueItem] = []
    cursor = after
    while len(out) < limit:
        rows = await fetch_rows(conn, _CANDIDATES, {"after": cursor, "scan": 500})
        if not rows:
            return out, None
        for r in rows:
            item = _item(r)
            cursor = item.content_id
            if not (item.flags or item.reports or item.last_action):
                continue  # a candidate the rules cleared (a merge of like names)
            if (
                status == "all"
                or (status == "open" and item.open)
                or (status == "hidden" and item.hidden)
            ):
                out.append(item)
                if len(out) == limit:
                    return out, cursor
    return out, cursor


async def title(conn: AsyncConnection[Any], content_id: str) -> dict[str, Any] | None:
    """One title's moderation record: its queue item, every report and decision."""
    rows = await fetch_rows(
        conn, _CANDIDATES.replace("c.content_id > %(after)s", "c.content_id = %(id)s"),
        {"id": content_id, "after": "", "scan": 1},
    )  # fmt: skip
    item = _item(rows[0]).as_dict() if rows else None
    if item is None:
        found = await fetch_rows(
            conn, "SELECT title, year FROM content WHERE content_id = %s", (content_id,)
        )
        if not found:
            return None
        item = QueueItem(content_id, found[0][0], found[0][1], [], 0, [], False, None, None,
                         False).as_dict()  # fmt: skip
    reports = await fetch_rows(
        conn,
        "SELECT report_id, user_id, reason, note, reported_at FROM moderation_reports"
        " WHERE content_id = %s ORDER BY reported_at, report_id",
        (content_id,),
    )
    decisions = await fetch_rows(
        conn,
        "SELECT decision_id, action, admin_id, note, fields, decided_at"
        " FROM moderation_decisions WHERE content_id = %s ORDER BY decided_at, decision_id",
        (content_id,),
    )
    item["report_log"] = [
        {"report_id": r[0], "user_id": r[1], "reason": r[2], "note": r[3],
         "reported_at": r[4].isoformat()}
        for r in reports
    ]  # fmt: skip
    item["decisions"] = [
        {"decision_id": d[0], "action": d[1], "admin_id": d[2], "note": d[3],
         "fields": {k: json.loads(v) for k, v in (d[4] or {}).items()},
         "decided_at": d[5].isoformat()}
        for d in decisions
    ]  # fmt: skip
    return item


async def hidden(conn: AsyncConnection[Any], content_id: str) -> bool:
    """Whether moderation hid this title (by its canonical id), or the series an episode
    belongs to: it then reads as unknown to everyone but moderators (api/content.py)."""
    cur = await conn.execute(
        "SELECT 1 FROM moderation_titles m WHERE m.hidden AND m.content_id IN"
        " (%(id)s, (SELECT coalesce(mg.into_id, c.series_id) FROM content c"
        "  LEFT JOIN content_merges mg ON mg.merged_id = c.series_id"
        "  WHERE c.content_id = %(id)s))",
        {"id": content_id},
    )
    return await cur.fetchone() is not None
