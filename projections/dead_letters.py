"""Dead letters read model: every record a projector could not decode or apply, with the
operators' decisions on it (docs/operations/dead-letters.md).

Folded from two kinds of topic:

* the ``<topic>.dlq`` topics, read *raw* (``raw_topics``): a dead letter may be bytes
  nothing can decode, and decoding it here would only dead-letter it once more. Its
  headers name the projector that failed it and the original position; that pair is the
  dead letter's identity. A second copy (a batch redone after a crash sent it twice)
  keeps the earliest copy's row, whatever order the copies are folded in;
* ``ops.dead_letters``: ``DeadLetterRetried``, ``DeadLetterSkipped`` and
  ``DeadLettersPurged``. One partition, so the ops offset orders every decision.

The two sides are joined when read, never when folded: a decision folded before its dead
letter (they live on different topics) still counts, so a replay folds the same state
whatever order the topics are read in. The state of a letter is its last decision:
``skipped``; ``retried`` when a retry applied it (or found an earlier retry had);
otherwise ``pending``, with ``attempts`` counting the retries. A purge hides the letters
resolved before it; nothing is deleted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from core.codec import CodecError, default_codec
from core.events import Event, headers_dict, pack_headers, unpack_headers
from core.ids import from_millis, iso_z
from core.topics import EVENT_TOPICS, OPS_DEAD_LETTERS
from projections.base import Envelope, PostgresOnly, RejectedEvent
from streams.log import InvalidToken, Position

DLQ_SUFFIX = ".dlq"
DLQ_TOPICS: tuple[str, ...] = tuple(t.dead_letter.name for t in EVENT_TOPICS)
RESOLVED_OUTCOMES = ("applied", "already_applied")


def letter_id(projector: str, topic: str, partition: int, offset: int) -> str:
    """``<projector>@<topic>:<partition>:<offset>``: the failing projector and the original
    position, which together name one dead letter (the .dlq copy's own position does not:
    a redone batch can send two copies)."""
    return f"{projector}@{topic}:{partition}:{offset}"


def parse_letter_id(raw: str) -> tuple[str, Position]:
    projector, sep, where = raw.partition("@")
    if not sep or not projector:
        raise InvalidToken("expected <projector>@<topic>:<partition>:<offset>")
    return projector, Position.parse(where)


def original_topic(topic: str) -> str:
    """A topic filter may name the original topic or its dead-letter topic."""
    return topic.removesuffix(DLQ_SUFFIX)


class DeadLettersProjector(PostgresOnly):
    name = "dead_letters"
    topics: tuple[str, ...] = (*DLQ_TOPICS, OPS_DEAD_LETTERS.name)
    raw_topics: frozenset[str] = frozenset(DLQ_TOPICS)
    tables: tuple[str, ...] = ("dead_letters", "dead_letter_decisions", "dead_letter_purges")

    def check(self, event: Envelope) -> None:
        if event.event_type == "raw":
            return  # a copy without our headers is still listed (projector "?")
        if event.event_type not in OPS_DEAD_LETTERS.event_types:
            raise RejectedEvent(f"dead_letters does not handle {event.event_type}")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        letters = [_letter_row(e) for e in batch if e.event_type == "raw"]
        ops = [e for e in batch if e.event_type != "raw"]
        async with conn.cursor() as cur:
            if letters:
                await cur.executemany(
                    'INSERT INTO dead_letters (projector, topic, partition, "offset", dlq_topic,'
                    " dlq_partition, dlq_offset, reason, error, key, value, headers, dead_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    ' ON CONFLICT (projector, topic, partition, "offset") DO UPDATE SET'
                    " dlq_topic = EXCLUDED.dlq_topic, dlq_partition = EXCLUDED.dlq_partition,"
                    " dlq_offset = EXCLUDED.dlq_offset, reason = EXCLUDED.reason,"
                    " error = EXCLUDED.error, dead_at = EXCLUDED.dead_at"
                    # the earliest copy wins, in whichever order copies arrive
                    " WHERE (EXCLUDED.dlq_partition, EXCLUDED.dlq_offset)"
                    " < (dead_letters.dlq_partition, dead_letters.dlq_offset)",
                    letters,
                )
            decisions = [_decision_row(e) for e in ops if e.event_type != "DeadLettersPurged"]
            if decisions:
                await cur.executemany(
                    "INSERT INTO dead_letter_decisions (ops_offset, projector, topic, partition,"
                    ' "offset", decision, outcome, error, decided_by, note, decided_at)'
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT DO NOTHING",
                    decisions,
                )
            purges = [
                (e.offset, e.payload["topic"], e.payload["projector"], e.payload["by"],
                 e.payload["note"], e.happened_at)
                for e in ops
                if e.event_type == "DeadLettersPurged"
            ]  # fmt: skip
            if purges:
                await cur.executemany(
                    "INSERT INTO dead_letter_purges"
                    " (ops_offset, topic, projector, purged_by, note, purged_at)"
                    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
                    purges,
                )


#: the columns' ranges (int, bigint): a header number outside them reads as -1
_INT4 = 2**31 - 1
_INT8 = 2**63 - 1
_NUMBER = re.compile(r"-?[0-9]+")


def _letter_row(e: Envelope) -> tuple[Any, ...]:
    """The row of one .dlq record, whatever its headers hold. Nothing here may fail: a
    .dlq topic has no dead-letter topic of its own, so a row PostgreSQL refuses would
    stop this projector for good. Text loses its NUL characters (PostgreSQL text cannot
    hold them, and a projector's rejection may quote a payload that has one)."""
    h = {k: v.replace("\x00", "\ufffd") for k, v in headers_dict(e.headers).items()}

    def number(name: str, bound: int) -> int:
        raw = h.get(name, "")
        if not _NUMBER.fullmatch(raw):  # isdigit() takes "²" and "--1", int() does not
            return -1
        n = int(raw)
        return n if -bound - 1 <= n <= bound else -1

    original = [(k, v) for k, v in e.headers if not k.startswith("dlq_")]
    return (
        h.get("dlq_projector", "?"),
        h.get("dlq_topic", original_topic(e.topic)),
        number("dlq_partition", _INT4),
        # a copy without its original offset still gets a row of its own
        number("dlq_offset", _INT8) if "dlq_offset" in h else -1 - e.offset,
        e.topic,
        e.partition,
        e.offset,
        h.get("dlq_reason", "unknown"),
        h.get("dlq_error", ""),
        e.key.encode() if e.key else None,
        bytes(e.payload["value"]),
        pack_headers(original),
        from_millis(e.timestamp_ms),
    )


def _decision_row(e: Envelope) -> tuple[Any, ...]:
    p = e.payload
    retried = e.event_type == "DeadLetterRetried"
    return (
        e.offset,
        p["projector"],
        p["topic"],
        p["partition"],
        p["offset"],
        "retried" if retried else "skipped",
        p["outcome"] if retried else None,
        p["error"] if retried else None,
        p["by"],
        p["note"],
        e.happened_at,
    )


# -- the decisions, as events (the CLI and the API append the same ones) -----


def decision(
    kind: str, projector: str, where: Position, *, by: str | None, note: str = "", **extra: Any
) -> Event:
    """``DeadLetterRetried`` (``outcome``, ``error`` in ``extra``) or ``DeadLetterSkipped``
    for the dead letter ``projector`` made of the record at ``where``."""
    return Event(
        kind,
        letter_id(projector, where.topic, where.partition, where.offset),
        {
            "projector": projector,
            "topic": where.topic,
            "partition": where.partition,
            "offset": where.offset,
            "by": by,
            "note": note,
            **extra,
        },
        producer="mgw-dlq",
    )


def purged(*, topic: str | None, projector: str | None, by: str | None, note: str = "") -> Event:
    return Event(
        "DeadLettersPurged",
        "purge",
        {"topic": original_topic(topic) if topic else None, "projector": projector,
         "by": by, "note": note},
        producer="mgw-dlq",
    )  # fmt: skip


# -- queries -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LetterFilter:
    topic: str | None = None  # the original topic (a .dlq name is accepted)
    projector: str | None = None
    reason: str | None = None  # decode | rejected | apply
    error: str | None = None  # a substring of the error, any case
    since: datetime | None = None  # dead at or after
    state: str = "pending"  # pending | retried | skipped | resolved | all
    include_purged: bool = False


#: the sort key of a page: (dead_at, projector, topic, partition, offset)
CursorKey = tuple[datetime, str, str, int, int]
CURSOR_KINDS = (datetime, str, str, int, int)
STATES = ("pending", "retried", "skipped", "resolved", "all")

_COLUMNS = (
    'd.projector, d.topic, d.partition, d."offset", d.dlq_topic, d.dlq_partition,'
    " d.dlq_offset, d.reason, d.error, d.dead_at, coalesce(s.attempts, 0) AS attempts,"
    " s.last_decision, s.last_outcome, s.decided_at"
)
_STATE = (
    "CASE WHEN s.last_decision = 'skipped' THEN 'skipped'"
    " WHEN s.last_decision = 'retried' AND s.last_outcome IN ('applied', 'already_applied')"
    " THEN 'retried' ELSE 'pending' END"
)
_FROM = (
    " FROM dead_letters d LEFT JOIN LATERAL ("
    " SELECT count(*) FILTER (WHERE x.decision = 'retried') AS attempts,"
    " (array_agg(x.decision ORDER BY x.ops_offset DESC))[1] AS last_decision,"
    " (array_agg(x.outcome ORDER BY x.ops_offset DESC))[1] AS last_outcome,"
    " max(x.ops_offset) AS last_ops, max(x.decided_at) AS decided_at"
    " FROM dead_letter_decisions x WHERE x.projector = d.projector AND x.topic = d.topic"
    ' AND x.partition = d.partition AND x."offset" = d."offset") s ON true'
)
_PURGED = (
    "EXISTS (SELECT 1 FROM dead_letter_purges g WHERE g.ops_offset > s.last_ops"
    " AND (g.topic IS NULL OR g.topic = d.topic)"
    " AND (g.projector IS NULL OR g.projector = d.projector))"
)


async def list_letters(
    conn: AsyncConnection[Any], f: LetterFilter, limit: int, after: CursorKey | None = None
) -> list[dict[str, Any]]:
    """Dead letters oldest first, matching ``f``, after the cursor key."""
    state = {"resolved": "('retried', 'skipped')", "all": "('pending', 'retried', 'skipped')"}
    wanted = state.get(f.state, f"('{f.state}')" if f.state in STATES else "('pending')")
    cur = await conn.execute(
        f"SELECT * FROM (SELECT {_COLUMNS}, {_STATE} AS state,"
        f" ({_STATE} <> 'pending' AND {_PURGED}) AS purged {_FROM}) l"
        f" WHERE state IN {wanted}"
        " AND (%(purged)s OR NOT purged)"
        " AND (%(topic)s::text IS NULL OR topic = %(topic)s)"
        " AND (%(projector)s::text IS NULL OR projector = %(projector)s)"
        " AND (%(reason)s::text IS NULL OR reason = %(reason)s)"
        " AND (%(error)s::text IS NULL OR strpos(lower(error), lower(%(error)s)) > 0)"
        " AND (%(since)s::timestamptz IS NULL OR dead_at >= %(since)s)"
        ' AND (%(after)s::boolean IS NOT TRUE OR (dead_at, projector, topic, partition, "offset")'
        " > (%(a0)s, %(a1)s, %(a2)s, %(a3)s, %(a4)s))"
        ' ORDER BY dead_at, projector, topic, partition, "offset" LIMIT %(limit)s',
        {
            "purged": f.include_purged,
            "topic": original_topic(f.topic) if f.topic else None,
            "projector": f.projector,
            "reason": f.reason,
            "error": f.error,
            "since": f.since,
            "after": after is not None,
            **{f"a{i}": (after[i] if after else None) for i in range(5)},
            "limit": limit,
        },
    )
    names = [c.name for c in cur.description or ()]
    return [_view(dict(zip(names, row, strict=True))) for row in await cur.fetchall()]


async def get_letter(
    conn: AsyncConnection[Any], projector: str, where: Position
) -> dict[str, Any] | None:
    """One dead letter in full: the summary, the original key, value and headers, and
    every decision on it in order."""
    cur = await conn.execute(
        f"SELECT {_COLUMNS}, {_STATE} AS state, ({_STATE} <> 'pending' AND {_PURGED}) AS purged,"
        f" d.key, d.value, d.headers {_FROM}"
        ' WHERE d.projector = %s AND d.topic = %s AND d.partition = %s AND d."offset" = %s',
        (projector, where.topic, where.partition, where.offset),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    names = [c.name for c in cur.description or ()]
    letter = _view(dict(zip(names, row, strict=True)))
    cur = await conn.execute(
        "SELECT ops_offset, decision, outcome, error, decided_by, note, decided_at"
        " FROM dead_letter_decisions WHERE projector = %s AND topic = %s AND partition = %s"
        ' AND "offset" = %s ORDER BY ops_offset',
        (projector, where.topic, where.partition, where.offset),
    )
    names = [c.name for c in cur.description or ()]
    letter["decisions"] = [dict(zip(names, r, strict=True)) for r in await cur.fetchall()]
    return letter


def _view(row: dict[str, Any]) -> dict[str, Any]:
    row["id"] = letter_id(row["projector"], row["topic"], row["partition"], row["offset"])
    row["cursor_key"] = (
        row["dead_at"], row["projector"], row["topic"], row["partition"], row["offset"]
    )  # fmt: skip
    return row


def summary(letter: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "projector", "topic", "partition", "offset", "reason", "error", "state",
            "attempts", "dead_at", "dlq_topic", "dlq_partition", "dlq_offset")  # fmt: skip
    return {k: letter[k] for k in keys}


def detail(letter: dict[str, Any]) -> dict[str, Any]:
    """A letter in full, for `show` and ``GET /v1/admin/dead-letters/{id}``: the original key,
    its headers and, when the bytes decode, the event."""
    headers = headers_dict(unpack_headers(letter["headers"]))
    out = summary(letter) | {
        "key": letter["key"].decode("utf-8", "replace") if letter["key"] is not None else None,
        "headers": headers,
        "event_type": None,
        "payload": None,
        "decode_error": None,
        "purged": letter["purged"],
        "decisions": letter["decisions"],
    }
    try:
        out["event_type"], out["payload"] = default_codec().decode(bytes(letter["value"]))
    except CodecError as exc:
        out["decode_error"] = f"{type(exc).__name__}: {exc}"
        out["value_hex"] = bytes(letter["value"][:256]).hex()
    return out


def plain(v: Any) -> Any:
    """``json.dumps``'s ``default`` for what the database and the codec hand back."""
    if isinstance(v, datetime):
        return iso_z(v)
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).decode("utf-8", "replace")
    return str(v)
