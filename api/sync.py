"""Library sync: a device's batch of offline ops in, every change after a cursor out.

``POST /v1/sync`` checks each op on its own (one bad op never fails the batch), stamps
the good ones with the hybrid logical clock from the device's ``at``, appends them as
library events and waits (bounded) for the library projector, so the answer says what
happened to each op and the cursor that includes them. ``GET /v1/sync`` pages through
the user's change feed, removals included as tombstones. The single REST commands in
api/library.py go through the same ``submit``.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import require
from api.consistency import wait_for_token, wait_until_covered
from api.context import ctx
from api.errors import Problem
from api.requests import int_param, read_body
from api.responses import Body, respond
from core.backoff import Backoff
from core.events import Event
from core.ids import from_millis, iso_z, to_millis, utcnow
from domain import library as lib
from domain.sync.hlc import ClockSkew, HybridClock, device_stamp
from projections import library as store
from projections.registry import by_name
from streams.log import Position

#: a device waits on its answer: 1 ms doubling to 10 ms (a batch applies in tens of ms)
_APPLIED_POLL = Backoff(first=0.001, cap=0.01, jitter=False)
#: this process's clock: commands it stamps itself sort after every device stamp it took
CLOCK = HybridClock("server")
_MAX_TEXT = 128
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


@dataclass(slots=True)
class Outcome:
    op_id: str | None
    status: str = "applied"  # applied | duplicate | rejected
    error: str | None = None
    field: str | None = None
    code: int = 200  # the HTTP status a single command answers with

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op_id": self.op_id, "status": self.status}
        if self.error:
            out["error"] = self.error
            out["field"] = self.field
        return out


@dataclass(slots=True)
class _Op:
    index: int
    op_id: str
    kind: str
    content_id: str | None
    value: dict[str, Any]
    at_ms: int
    outcome: Outcome = field(default_factory=lambda: Outcome(None))


class OpResult(Body):
    op_id: str | None = Field(description="null when the op carried none")
    status: Literal["applied", "duplicate", "rejected"]
    error: str | None = Field(default=None, description="why it was rejected")
    field: str | None = Field(default=None, description="the op's field at fault")


class SyncPushed(Body):
    results: list[OpResult] = Field(description="one per op, in the order sent")
    cursor: str = Field(description="pass as since to pull what changed after")
    applied: bool = Field(description="false: appended, not yet applied (consistency token)")


class Change(Body):
    entity: str = Field(description="watchlist, history, rating, services, settings, up_next")
    content_id: str | None = Field(default=None, description="absent for services, settings")
    deleted: bool
    value: dict[str, Any] | None = Field(
        default=None,
        description="the entity's value as its GET shows it (absent when deleted):"
        " watchlist {added_at}, history {plays, first_watched_at, last_watched_at},"
        " rating {rating}, services {region, platforms, offer_types}, settings"
        " {min_resume_pct, watched_pct, min_play_s}, up_next {hidden}",
    )
    changed_at: datetime
    device_id: str


class SyncPulled(Body):
    changes: list[Change] = Field(description="oldest first")
    cursor: str
    has_more: bool


class LastActivities(Body):
    """When each part of the library last changed (null: never)."""

    watchlist: datetime | None
    history: datetime | None
    rating: datetime | None
    services: datetime | None
    settings: datetime | None
    up_next: datetime | None
    all: datetime | None


def encode_cursor(seq: int, horizon: int) -> str:
    """Opaque to clients: the feed position, and the purge horizon it was issued under."""
    return base64.urlsafe_b64encode(f"sync:{seq}:{horizon}".encode()).decode().rstrip("=")


def decode_cursor(raw: str, name: str = "since") -> tuple[int, int]:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        prefix, seq, horizon = text.split(":")
        if prefix != "sync" or not seq.isdigit() or not horizon.isdigit():
            raise ValueError
        return int(seq), int(horizon)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise Problem(
            400, f"{name} is not a cursor this API returned; omit it to sync everything",
            field=name,
        ) from None  # fmt: skip


def _text(value: Any, name: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT or "\x00" in value:
        raise lib.OpError(name, f"must be text of 1 to {_MAX_TEXT} characters")
    return value


def _at(value: Any) -> int:
    if not isinstance(value, str):
        raise lib.OpError("at", "must be an RFC 3339 time such as 2026-12-04T10:00:00Z")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise lib.OpError("at", "must be an RFC 3339 time such as 2026-12-04T10:00:00Z") from None
    if ts.tzinfo is None:
        raise lib.OpError("at", "must carry a time zone offset (Z or +hh:mm)")
    if ts < _EARLIEST:
        # a device whose clock was never set (1970) would lose every conflict, and the
        # clock's text form only orders times after 1970
        raise lib.OpError("at", "is before 2000: the device clock is not set; correct it")
    return to_millis(ts)


def _parse(index: int, raw: Any) -> _Op:
    """One op checked on its own; a rejected op carries its outcome."""
    op_id = raw.get("op_id") if isinstance(raw, dict) else None
    op = _Op(index, op_id if isinstance(op_id, str) else "", "", None, {}, 0)
    op.outcome.op_id = op_id if isinstance(op_id, str) else None
    try:
        if not isinstance(raw, dict):
            raise lib.OpError(f"ops[{index}]", "must be an object")
        extra = set(raw) - {"op_id", "kind", "content_id", "value", "at"}
        if extra:
            raise lib.OpError(sorted(extra)[0], "is not a field of an op")
        op.op_id = _text(raw.get("op_id"), "op_id") or ""
        op.kind = lib.check_kind(raw.get("kind"))
        if lib.needs_content(op.kind):
            op.content_id = _text(raw.get("content_id"), "content_id")
        elif raw.get("content_id") is not None:
            raise lib.OpError("content_id", f"{op.kind} is not about one title; leave it out")
        op.at_ms = _at(raw.get("at"))
        op.value = _value(op.kind, raw.get("value"), op.at_ms)
    except lib.OpError as exc:
        code = 413 if exc.field == "value.size" else 422
        op.outcome = Outcome(op.outcome.op_id, "rejected", exc.message, exc.field, code)
    return op


def _value(kind: str, value: Any, at_ms: int) -> dict[str, Any]:
    if kind == "rating.set":
        if not isinstance(value, dict) or "rating" not in value:
            raise lib.OpError("value.rating", 'is required: {"rating": 1..10}')
        return {"rating": lib.rating(value["rating"])}
    if kind == "services.set":
        return lib.services(value)
    if kind == "settings.set":
        if not isinstance(value, dict):
            raise lib.OpError("value", "must be an object of settings")
        return dict(value)  # merged with the current settings in submit
    if kind == "history.add" and isinstance(value, dict) and "watched_at" in value:
        try:
            return {"watched_at_ms": _at(value["watched_at"])}
        except lib.OpError:
            raise lib.OpError("value.watched_at", "must be an RFC 3339 time") from None
    if value not in (None, {}) and kind != "history.add":
        raise lib.OpError("value", f"{kind} takes no value")
    return {}


async def submit(
    request: Request,
    user_id: str,
    device_id: str,
    raws: list[Any],
    *,
    seen: int | None,
    server_clock: bool = False,
) -> tuple[list[Outcome], Position | None, bool]:
    """Check, stamp and append a device's ops; returns each op's outcome, the position of
    the last event appended, and whether the library projector has applied them."""
    c = ctx(request)
    ops = [_parse(i, raw) for i, raw in enumerate(raws)]
    good = [op for op in ops if op.outcome.status != "rejected"]
    # an op id repeated in this batch, or already folded, changes nothing
    first: dict[str, _Op] = {}
    for op in good:
        if op.op_id in first:
            op.outcome.status = "duplicate"
        else:
            first[op.op_id] = op
    async with c.stores.pg.connection() as conn:
        known = await store.known_ops(conn, user_id, list(first)) if first else set()
        wanted = {op.content_id for op in first.values() if op.content_id}
        found: set[str] = set()
        if wanted:
            cur = await conn.execute(
                "SELECT content_id FROM content WHERE content_id = ANY(%s)"
                " UNION SELECT merged_id FROM content_merges WHERE merged_id = ANY(%s)",
                (list(wanted), list(wanted)),
            )
            found = {r[0] for r in await cur.fetchall()}
        rules = lib.DEFAULT_RULES
        if any(op.kind == "settings.set" for op in first.values()):
            current = await store.register(conn, user_id, "settings")
            if current:
                rules = lib.ResumeRules(**current)
    now = utcnow()
    now_ms = to_millis(now)
    events: list[Event] = []
    for op in first.values():
        if op.op_id in known:
            op.outcome.status = "duplicate"
            continue
        if op.content_id is not None and op.content_id not in found:
            op.outcome = Outcome(
                op.op_id, "rejected", f"no title has the id {op.content_id!r}", "content_id", 404
            )
            continue
        try:
            if op.kind == "settings.set":
                rules = lib.settings(op.value, rules)  # ops in a batch build on each other
                op.value = rules.as_dict()
            if server_clock:
                stamp = CLOCK.now(now_ms)
                stamp = device_stamp(stamp.wall_ms, stamp.logical, device_id)
            else:
                stamp = device_stamp(op.at_ms, op.index, device_id)
                CLOCK.observe(stamp, now_ms)
        except ClockSkew as exc:
            op.outcome = Outcome(op.op_id, "rejected", str(exc), "at", 422)
            continue
        except lib.OpError as exc:
            op.outcome = Outcome(op.op_id, "rejected", exc.message, exc.field, 422)
            continue
        event_type, payload = lib.payload(
            op.kind,
            user_id=user_id,
            op_id=op.op_id,
            device_id=device_id,
            stamp=stamp.encode(),
            content_id=op.content_id,
            value=op.value,
            at_ms=op.at_ms,
            seen=seen,
        )
        if "watched_at" in payload:
            payload["watched_at"] = datetime.fromtimestamp(payload["watched_at"] / 1000, UTC)
        events.append(
            Event(
                event_type,
                user_id,
                payload,
                occurred_at=now,
                correlation_id=request.headers.get("X-Request-Id"),
                producer="api",
            )
        )
        op.outcome.op_id = op.op_id
    if not events:
        return [op.outcome for op in ops], None, True
    positions = await c.publisher.publish_many(events)
    last = max(positions, key=lambda p: p.offset)  # one user: one partition
    done = await wait_until_covered(c.stores.pg, ["library"], last, c.settings.consistency_wait_s)
    return [op.outcome for op in ops], last, done


def device_of(request: Request, body_device: Any = None) -> str:
    raw = body_device if body_device is not None else request.headers.get("X-Device-Id", "api")
    if not isinstance(raw, str) or not 0 < len(raw) <= _MAX_TEXT or "\x00" in raw:
        raise Problem(422, f"must be text of 1 to {_MAX_TEXT} characters", field="device_id")
    return raw


async def post_sync(request: Request) -> Response:
    user = (await require(request, "library")).user_id
    c = ctx(request)
    body = await read_body(request)
    if not isinstance(body, dict):
        raise Problem(422, "body must be a JSON object with device_id and ops", field="body")
    extra = set(body) - {"device_id", "ops", "since"}
    if extra:
        raise Problem(422, "is not a field of a sync batch", field=sorted(extra)[0])
    device_id = device_of(request, body.get("device_id") or "")
    ops = body.get("ops")
    if not isinstance(ops, list):
        raise Problem(422, "must be a list of ops", field="ops")
    if len(ops) > lib.MAX_BATCH:
        raise Problem(
            413, f"a batch carries at most {lib.MAX_BATCH} ops; send the rest in another",
            field="ops",
        )  # fmt: skip
    since = body.get("since")
    seen = decode_cursor(since, "since")[0] if isinstance(since, str) else None
    if since is not None and not isinstance(since, str):
        raise Problem(400, "since must be a cursor this API returned", field="since")
    outcomes, last, done = await submit(request, user, device_id, ops, seen=seen)
    async with c.stores.pg.connection() as conn:
        seq, purged = await store.feed_position(conn, user)
    headers = {"X-Consistency-Token": last.token()} if last else {}
    return respond(
        SyncPushed,
        {
            "results": [o.as_dict() for o in outcomes],
            "cursor": encode_cursor(seq, purged),
            "applied": done,
        },
        headers=headers,
    )


async def get_sync(request: Request) -> Response:
    user = (await require(request, "library")).user_id
    c = ctx(request)
    raw = request.query_params.get("since")
    since, horizon = decode_cursor(raw) if raw else (None, 0)
    limit = int_param(request, "limit", 500, 1, 1000)
    await wait_for_token(request, c.stores.pg, [by_name("library")], c.settings.consistency_wait_s)
    async with c.stores.pg.connection() as conn:
        try:
            rows, more, purged = await store.changes(conn, user, since, limit, horizon)
        except store.CursorGone:
            raise Problem(
                410,
                f"this cursor is older than the {c.settings.tombstone_days:g} days removals"
                " are kept;"
                " resync: drop local state and GET /v1/sync without since",
                field="since",
            ) from None
    changes = [
        store.change_json(r.entity, r.key, r.deleted, r.value, r.changed_at, r.device_id)
        for r in rows
    ]
    cursor = encode_cursor(rows[-1].seq if rows else since or 0, purged)
    return respond(SyncPulled, {"changes": changes, "cursor": cursor, "has_more": more})


async def get_last_activities(request: Request) -> Response:
    user = (await require(request, "library")).user_id
    c = ctx(request)
    await wait_for_token(request, c.stores.pg, [by_name("library")], c.settings.consistency_wait_s)
    async with c.stores.pg.connection() as conn:
        activity = await store.last_activities(conn, user)
    out: dict[str, Any] = {
        e: iso_z(from_millis(activity[e])) if e in activity else None for e in lib.ENTITIES
    }
    out["all"] = max((v for v in out.values() if v), default=None)
    return respond(LastActivities, out)


routes = [
    Route("/v1/sync", post_sync, methods=["POST"]),
    Route("/v1/sync", get_sync, methods=["GET"]),
    Route("/v1/sync/last-activities", get_last_activities, methods=["GET"]),
]
