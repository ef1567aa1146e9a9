"""The sockets one API process holds, and the Redis channels that feed them.

A ``Hub`` subscribes to the channel of every user with a socket here (core/fanout.py),
so a fleet grows by adding processes and each hears only its own users. Every message
for a socket goes through that socket's queue and one writer task (``Connection.pump``):
frames never interleave, a slow device cannot stall the others, and a device that falls
a queue behind is closed and reconnects with its cursor.

Library pushes are filtered per socket against the feed position it has seen: the hub
forwards the changes it has not sent, and when a push skipped ahead (a lost publish, a
reconnect) it reads the gap from the sync feed, so a device misses nothing and gets
nothing twice. Presence is a Redis hash per user, one field per socket, refreshed while
the socket lives, so every process answers ``GET /v1/me/devices`` alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.websockets import WebSocket, WebSocketState

from api.sync import encode_cursor
from core import fanout
from core.backoff import Backoff
from core.events import Event
from core.ids import derived_id, new_id, to_millis, utcnow
from core.metrics import PUSHES_DELIVERED, SOCKETS_OPEN
from domain.identity.tokens import AccessClaims
from domain.realtime import CLOSE_CURSOR_GONE, CLOSE_POLICY, CLOSE_TRY_AGAIN
from projections import library as feed
from projections.device_commands import command_by_id

log = logging.getLogger("mgw.realtime")

PRESENCE_KEY = "mgw:rt:presence:{user}"
#: a presence entry not refreshed for this long belongs to a process that died
PRESENCE_STALE_S = 90.0
_PRESENCE_EVERY_S = 30.0
#: a socket this many messages behind is closed (it reconnects with its cursor)
QUEUE_LIMIT = 1000
#: changes per library frame when a socket catches up from the feed
PAGE = 500
#: the process's own subscription, so the reader always has a channel to wait on
_HUB_CHANNEL = "mgw:rt:hub"
_RECONNECT = Backoff(first=0.2, cap=5.0)
_NODE = f"{socket.gethostname()}:{os.getpid()}"


class _Close:
    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code, self.reason = code, reason


@dataclass(eq=False, slots=True)
class Connection:
    """One socket: whose, which device, and what it has been sent."""

    ws: WebSocket
    user_id: str
    device_id: str
    session_id: str | None
    claims: AccessClaims
    seq: int  # the library feed position this socket has been sent
    horizon: int
    id: str = field(default_factory=new_id)
    connected_at: float = field(default_factory=time.time)
    heard_at: float = field(default_factory=time.monotonic)
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    #: commands written to this socket: id -> the target they were addressed to
    delivered: dict[str, str] = field(default_factory=dict)
    closed: bool = False

    def matches(self, target: str) -> bool:
        return target == self.device_id or target == self.session_id

    def send(self, message: Any) -> bool:
        """Queue a message; False (and the socket is told to reconnect) when full."""
        if self.closed:
            return False
        try:
            self.queue.put_nowait(message)
            return True
        except asyncio.QueueFull:
            self.close(CLOSE_TRY_AGAIN, "too far behind: reconnect with your cursor")
            return False

    def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        # jump the queue: nothing queued matters to a socket that is going away
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(_Close(code, reason))
        if self.queue.full():
            self.queue.get_nowait()
            self.queue.put_nowait(_Close(code, reason))


class Hub:
    def __init__(self, redis: Any, pg: Any, publisher: Any, revocations: Any) -> None:
        self.redis = redis
        self.pg = pg
        self.publisher = publisher
        self.revocations = revocations
        self.by_user: dict[str, set[Connection]] = {}
        self._pubsub: Any = None
        self._lock = asyncio.Lock()  # subscribe/unsubscribe, in the order sockets come and go
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- sockets coming and going -------------------------------------------------------

    async def join(self, conn: Connection) -> None:
        async with self._lock:
            first = conn.user_id not in self.by_user
            self.by_user.setdefault(conn.user_id, set()).add(conn)
            if first and self._pubsub is not None:
                await self._pubsub.subscribe(fanout.channel(conn.user_id))
        SOCKETS_OPEN.inc()
        await self._presence(conn, online=True)

    async def leave(self, conn: Connection) -> None:
        conn.closed = True
        async with self._lock:
            mine = self.by_user.get(conn.user_id)
            if mine is None or conn not in mine:
                return
            mine.discard(conn)
            if not mine:
                del self.by_user[conn.user_id]
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.unsubscribe(fanout.channel(conn.user_id))
        SOCKETS_OPEN.dec()
        with contextlib.suppress(Exception):  # presence expires by itself if Redis is away
            await self._presence(conn, online=False)

    def connections(self) -> Iterable[Connection]:
        for conns in self.by_user.values():
            yield from conns

    async def _presence(self, conn: Connection, *, online: bool) -> None:
        key = PRESENCE_KEY.format(user=conn.user_id)
        pipe = self.redis.pipeline(transaction=False)
        if online:
            pipe.hset(key, conn.id, _presence_entry(conn))
            pipe.expire(key, int(PRESENCE_STALE_S * 2))
            fanout.mark_online(pipe, [conn.user_id])
        else:
            pipe.hdel(key, conn.id)
        # the user's other devices hear it at once (a remote lists the TV that came on)
        pipe.publish(
            fanout.channel(conn.user_id),
            fanout.encode(
                {
                    "type": "presence",
                    "device_id": conn.device_id,
                    "connection_id": conn.id,
                    "online": online,
                }
            ),
        )
        await pipe.execute()

    # -- Redis to sockets ---------------------------------------------------------------

    def dispatch(self, user_id: str, message: dict[str, Any]) -> None:
        conns = self.by_user.get(user_id)
        if not conns:
            return
        target = message.get("to_device")
        for conn in tuple(conns):
            if target is None or conn.matches(target):
                conn.send(message)

    async def run(self, stop: asyncio.Event) -> None:
        """Read the subscribed channels until ``stop``; after a lost Redis connection,
        subscribe again and have every socket read its feed (pushes were lost)."""
        attempt = 0
        while not stop.is_set():
            try:
                await self._listen(stop)
                attempt = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("realtime subscription lost (%r); resubscribing", exc)
                self._pubsub = None
                await _sleep(_RECONNECT.delay(attempt), stop)
                attempt += 1
                for conn in tuple(self.connections()):
                    conn.send({"type": "resync"})
        await self._close_pubsub()

    async def _listen(self, stop: asyncio.Event) -> None:
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        async with self._lock:
            await pubsub.subscribe(_HUB_CHANNEL, *(fanout.channel(u) for u in self.by_user))
            self._pubsub = pubsub
        presence = asyncio.create_task(self._refresh_presence(stop))
        try:
            while not stop.is_set():
                msg = await pubsub.get_message(timeout=1.0)
                if msg is None or msg.get("type") != "message":
                    continue
                try:
                    message = json.loads(msg["data"])
                except ValueError:
                    continue
                self.dispatch(fanout.user_of(msg["channel"]), message)
        finally:
            presence.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await presence

    async def _close_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def _refresh_presence(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await _sleep(_PRESENCE_EVERY_S, stop)
            pipe = self.redis.pipeline(transaction=False)
            for conn in tuple(self.connections()):
                key = PRESENCE_KEY.format(user=conn.user_id)
                pipe.hset(key, conn.id, _presence_entry(conn))
                pipe.expire(key, int(PRESENCE_STALE_S * 2))
            fanout.mark_online(pipe, list(self.by_user))
            with contextlib.suppress(Exception):
                await pipe.execute()

    async def watch_tokens(self, stop: asyncio.Event, every_s: float = 1.0) -> None:
        """Close sockets whose session was revoked (the revocation cache polls each
        second) or whose token expired without a fresh one (an ``auth`` frame)."""
        while not stop.is_set():
            now = time.time()
            for conn in tuple(self.connections()):
                if self.revocations.refuses(conn.claims):
                    conn.close(CLOSE_POLICY, "the session was revoked: sign in again")
                elif conn.claims.expires_at <= now:
                    conn.close(CLOSE_POLICY, "the access token expired: refresh it and reconnect")
            await _sleep(every_s, stop)

    def close_all(self, code: int, reason: str) -> None:
        for conn in tuple(self.connections()):
            conn.close(code, reason)

    # -- one socket's writer ------------------------------------------------------------

    async def pump(self, conn: Connection) -> None:
        """The only writer of ``conn``'s socket, until it closes."""
        ws = conn.ws
        while True:
            item = await conn.queue.get()
            if isinstance(item, _Close):
                if ws.application_state == WebSocketState.CONNECTED:
                    with contextlib.suppress(Exception):
                        await ws.close(item.code, item.reason)
                return
            if conn.closed:
                continue
            for out in await self._frames(conn, item):
                await ws.send_text(json.dumps(out, separators=(",", ":"), default=str))
                PUSHES_DELIVERED.labels(out["type"]).inc()

    async def _frames(self, conn: Connection, item: dict[str, Any]) -> list[dict[str, Any]]:
        kind = item.get("type")
        if kind == "library":
            return await self._library(conn, item)
        if kind == "resync":
            return await self._catch_up(conn)
        if kind == "command":
            cid = item["command_id"]
            if cid in conn.delivered:
                return []  # a repeated push (a reconnect's backlog and the live one)
            conn.delivered[cid] = item["to_device"]
            self._record("DeviceCommandDelivered", conn, cid, item["to_device"])
            return [{k: v for k, v in item.items() if k != "to_device"}]
        if kind == "presence" and item.get("connection_id") == conn.id:
            return []  # a socket knows it is online
        return [item]

    async def _library(self, conn: Connection, push: dict[str, Any]) -> list[dict[str, Any]]:
        if push["seq"] <= conn.seq:
            return []  # sent already (from the feed, when this socket caught up)
        if push["from_seq"] > conn.seq:
            return await self._catch_up(conn)  # a push went missing: read the gap
        changes = [_public(c) for c in push["changes"] if c["seq"] > conn.seq]
        conn.seq = push["seq"]
        return [{"type": "library", "changes": changes, "cursor": self.cursor(conn)}]

    async def _catch_up(self, conn: Connection) -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        async with self.pg.connection() as pg:
            while True:
                try:
                    rows, more, purged = await feed.changes(
                        pg, conn.user_id, conn.seq, PAGE, conn.horizon
                    )
                except feed.CursorGone:
                    conn.close(
                        CLOSE_CURSOR_GONE, "the cursor is older than the removals kept: resync"
                    )
                    return frames
                conn.horizon = max(conn.horizon, purged)
                if not rows:
                    return frames
                conn.seq = rows[-1].seq
                frames.append(
                    {
                        "type": "library",
                        "changes": [
                            feed.change_json(
                                r.entity, r.key, r.deleted, r.value, r.changed_at, r.device_id
                            )
                            for r in rows
                        ],
                        "cursor": self.cursor(conn),
                    }
                )
                if not more:
                    return frames

    def cursor(self, conn: Connection) -> str:
        return encode_cursor(conn.seq, conn.horizon)

    # -- what devices answer ------------------------------------------------------------

    async def acknowledge(self, conn: Connection, command_id: str) -> bool:
        """A device's ack: recorded when the command was sent to this device."""
        target = conn.delivered.get(command_id)
        if target is None:
            async with self.pg.connection() as pg:
                cmd = await command_by_id(pg, command_id)
            if cmd is None or cmd.user_id != conn.user_id or not conn.matches(cmd.device_id):
                return False
            target = cmd.device_id
        self._record("DeviceCommandAcked", conn, command_id, target)
        return True

    def _record(self, event_type: str, conn: Connection, command_id: str, target: str) -> None:
        """Append a command's outcome without holding up the socket's writer."""
        event = Event(
            event_type,
            conn.user_id,
            {
                "command_id": command_id,
                "user_id": conn.user_id,
                "device_id": target,
                "connection_id": conn.id,
            },
            # one delivery per socket, one ack per command: a repeat is the same event
            event_id=derived_id(f"{event_type}:{command_id}:{conn.id}"),
            producer="realtime",
        )
        task = asyncio.create_task(self._append(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _append(self, event: Event) -> None:
        try:
            await self.publisher.publish(event)
        except Exception as exc:  # the command then expires: the sender is told so
            log.warning("could not record %s (%r)", event.event_type, exc)

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.wait(tuple(self._tasks), timeout=5)


def _public(change: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in change.items() if k != "seq"}


def _presence_entry(conn: Connection) -> str:
    return json.dumps(
        {
            "device_id": conn.device_id,
            "session_id": conn.session_id,
            "connected_at": int(conn.connected_at * 1000),
            "seen": to_millis(utcnow()),
            "node": _NODE,
        }
    )


async def online(redis: Any, user_id: str) -> list[dict[str, Any]]:
    """The user's live sockets across every process (stale entries left out)."""
    raw = await redis.hgetall(PRESENCE_KEY.format(user=user_id))
    cutoff = (time.time() - PRESENCE_STALE_S) * 1000
    out = []
    for conn_id, value in raw.items():
        entry = json.loads(value)
        if entry["seen"] >= cutoff:
            cid = conn_id.decode() if isinstance(conn_id, bytes) else conn_id
            out.append({"connection_id": cid, **entry})
    return out


async def _sleep(seconds: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
