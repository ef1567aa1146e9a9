"""Remote commands read model (``device_commands``): what a user asked a device to do
and what became of it.

Each command's story (issued, delivered, acknowledged, expired) is folded in log order,
one user per partition, so statuses only move forward and a replay tells the same
story. The projector announces every change (core/fanout.py): the issue goes to the
target device's sockets, each new status to all of the user's sockets, so the sender
sees "acked" without polling. The sweeper appends the expiry of a command nobody
acknowledged in time, an event like any other (audit).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from core.events import Event
from core.fanout import Push
from core.ids import derived_id, from_millis, iso_z, to_millis, utcnow
from core.topics import REALTIME
from domain.realtime import COMMANDS, next_status, status_at
from projections.base import Envelope, PostgresOnly, RejectedEvent, Stores, fetch_rows
from projections.sweeper import Sweeper

_TYPES = frozenset(REALTIME.event_types)

_COLUMNS = (
    "command_id, user_id, device_id, command, content_id, position_s, from_device, status,"
    " issued_at, expires_at, delivered_at, acked_at"
)


@dataclass(frozen=True, slots=True)
class Command:
    command_id: str
    user_id: str
    device_id: str
    command: str
    content_id: str | None
    position_s: float | None
    from_device: str | None
    status: str
    issued_at: datetime
    expires_at: datetime
    delivered_at: datetime | None
    acked_at: datetime | None

    def status_now(self) -> str:
        return status_at(self.status, to_millis(self.expires_at), to_millis(utcnow()))

    def as_dict(self) -> dict[str, Any]:
        """The command as the API and the sockets show it."""
        out: dict[str, Any] = {
            "command_id": self.command_id,
            "device_id": self.device_id,
            "command": self.command,
            "status": self.status_now(),
            "issued_at": iso_z(self.issued_at),
            "expires_at": iso_z(self.expires_at),
        }
        if self.content_id is not None:
            out["content_id"] = self.content_id
        if self.position_s is not None:
            out["position_s"] = self.position_s
        if self.from_device is not None:
            out["from_device"] = self.from_device
        if self.delivered_at is not None:
            out["delivered_at"] = iso_z(self.delivered_at)
        if self.acked_at is not None:
            out["acked_at"] = iso_z(self.acked_at)
        return out


class DeviceCommandsProjector(PostgresOnly):
    name = "device_commands"
    topics: tuple[str, ...] = (REALTIME.name,)
    tables: tuple[str, ...] = ("device_commands",)

    def check(self, event: Envelope) -> None:
        if event.event_type not in _TYPES:
            raise RejectedEvent(f"device_commands does not handle {event.event_type}")
        p = event.payload
        if not p["user_id"] or event.key != p["user_id"]:
            raise RejectedEvent("user_id: must be non-empty and the record key")
        if not p["command_id"] or "\x00" in p["command_id"]:
            raise RejectedEvent("command_id: must be non-empty text")
        if event.event_type == "DeviceCommandIssued" and p["command"] not in COMMANDS:
            raise RejectedEvent(f"command: must be one of {', '.join(COMMANDS)}")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> list[Command]:
        ids = sorted({e.payload["command_id"] for e in batch})
        known = {
            r[0]: Command(*r)
            for r in await fetch_rows(
                conn, f"SELECT {_COLUMNS} FROM device_commands WHERE command_id = ANY(%s)", (ids,)
            )
        }
        changed: dict[str, Command] = {}
        new: set[str] = set()
        for e in batch:
            p = e.payload
            cid = p["command_id"]
            at = e.happened_at
            current = known.get(cid)
            if e.event_type == "DeviceCommandIssued":
                if current is not None:
                    continue  # a repeated issue (a retried append) changes nothing
                current = Command(
                    cid, p["user_id"], p["device_id"], p["command"], p["content_id"],
                    p["position_s"], p["from_device"], "queued", at,
                    from_millis(p["expires_at_ms"]), None, None,
                )  # fmt: skip
                new.add(cid)
            else:
                # another user's command id, or an ack from a device it was not sent to,
                # changes nothing
                if current is None or current.user_id != p["user_id"]:
                    continue
                if e.event_type == "DeviceCommandAcked" and p["device_id"] != current.device_id:
                    continue
                status = next_status(
                    current.status, e.event_type, to_millis(at), to_millis(current.expires_at)
                )
                if status is None:
                    continue
                current = _moved(current, status, at)
            known[cid] = changed[cid] = current
        if new:
            await conn.execute(
                "INSERT INTO device_commands (command_id, user_id, device_id, command,"
                " content_id, position_s, from_device, status, issued_at, expires_at,"
                " delivered_at, acked_at) SELECT * FROM unnest(%s::text[], %s::text[],"
                " %s::text[], %s::text[], %s::text[], %s::float8[], %s::text[], %s::text[],"
                " %s::timestamptz[], %s::timestamptz[], %s::timestamptz[], %s::timestamptz[])"
                " ON CONFLICT (command_id) DO NOTHING",
                [list(col) for col in zip(*(_row(changed[c]) for c in sorted(new)), strict=True)],
            )
        moved = [c for cid, c in changed.items() if cid not in new]
        if moved:
            await conn.execute(
                "UPDATE device_commands d SET status = u.s, delivered_at = u.d, acked_at = u.a"
                " FROM unnest(%s::text[], %s::text[], %s::timestamptz[], %s::timestamptz[])"
                " AS u(id, s, d, a) WHERE d.command_id = u.id",
                (
                    [c.command_id for c in moved],
                    [c.status for c in moved],
                    [c.delivered_at for c in moved],
                    [c.acked_at for c in moved],
                ),
            )
        return list(changed.values())

    def announce(self, applied: Sequence[Command]) -> list[Push]:
        pushes: list[Push] = []
        for c in applied:
            body = c.as_dict()
            if c.status == "queued":
                # the command itself, to its device only (the hub records the delivery)
                pushes.append(
                    Push(c.user_id, {"type": "command", "to_device": c.device_id, **body})
                )
            pushes.append(Push(c.user_id, {"type": "command.status", **body}))
        return pushes

    def background(self, stores: Stores) -> Any:
        if stores.publisher is None:
            return None
        return CommandSweeper(stores.pg, stores.publisher)


def _moved(c: Command, status: str, at: datetime) -> Command:
    return Command(
        c.command_id, c.user_id, c.device_id, c.command, c.content_id, c.position_s,
        c.from_device, status, c.issued_at, c.expires_at,
        at if status == "delivered" else c.delivered_at,
        at if status == "acked" else c.acked_at,
    )  # fmt: skip


def _row(c: Command) -> tuple[Any, ...]:
    return (
        c.command_id, c.user_id, c.device_id, c.command, c.content_id, c.position_s,
        c.from_device, c.status, c.issued_at, c.expires_at, c.delivered_at, c.acked_at,
    )  # fmt: skip


class CommandSweeper(Sweeper):
    """Appends the expiry of every command still open past its deadline."""

    what = "command sweep"

    async def due(self, conn: AsyncConnection[Any]) -> list[Event]:
        rows = await fetch_rows(
            conn,
            "SELECT command_id, user_id FROM device_commands"
            " WHERE status IN ('queued', 'delivered') AND expires_at < now() LIMIT 1000",
        )
        now = utcnow()
        return [
            Event(
                "DeviceCommandExpired",
                uid,
                {"command_id": cid, "user_id": uid},
                event_id=derived_id(f"command-expired:{cid}"),
                occurred_at=now,
                producer="sweeper",
            )
            for cid, uid in rows
        ]


# -- queries -----------------------------------------------------------------------------


async def command_by_id(conn: AsyncConnection[Any], command_id: str) -> Command | None:
    rows = await fetch_rows(
        conn, f"SELECT {_COLUMNS} FROM device_commands WHERE command_id = %s", (command_id,)
    )
    return Command(*rows[0]) if rows else None


async def open_commands(
    conn: AsyncConnection[Any], user_id: str, targets: Sequence[str]
) -> list[Command]:
    """Commands a device (known by any of ``targets``) must still receive, oldest first."""
    rows = await fetch_rows(
        conn,
        f"SELECT {_COLUMNS} FROM device_commands WHERE user_id = %s AND device_id = ANY(%s)"
        " AND status IN ('queued', 'delivered') AND expires_at > now() ORDER BY issued_at",
        (user_id, list(targets)),
    )
    return [Command(*r) for r in rows]
