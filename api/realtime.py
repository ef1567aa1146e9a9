"""``GET /v1/ws``: one WebSocket per device, for everything that changes while it is on.

Sign in with the access token as the subprotocol pair ``bearer, <token>`` (browsers
cannot set headers on a socket) or ``?access_token=``; name the device with
``?device_id=`` (the id it uses in sync and playback; default: its sign-in session);
pass ``?since=<sync cursor>`` to be sent every library change after it first. The
server answers ``hello`` and then pushes ``library``, ``playback``, ``up_next``,
``notification``, ``command``, ``command.status`` and ``presence`` frames. The device
sends ``ping`` (answered ``pong``) at least every ``heartbeat_s``, ``ack`` for a command,
and ``auth`` with a fresh access token before the current one expires. Close codes are
in domain/realtime.py and docs/realtime.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from api.errors import Problem
from api.realtime_hub import Connection
from api.sync import decode_cursor
from domain.identity.roles import scopes_for
from domain.identity.tokens import AccessClaims, InvalidToken
from domain.realtime import (
    CLOSE_BAD_REQUEST,
    CLOSE_IDLE,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    MAX_FRAME,
    Violation,
    parse_frame,
    valid_device_id,
)
from projections import library as feed
from projections.device_commands import open_commands

#: the scope a socket needs: it carries library changes
SCOPE = "library"


def _offered_token(ws: WebSocket) -> tuple[str | None, str | None]:
    """(token, subprotocol to accept): the ``bearer, <token>`` pair, else the query."""
    offered = [p.strip() for p in ws.scope.get("subprotocols") or ()]
    if "bearer" in offered:
        rest = [p for p in offered if p != "bearer"]
        return (rest[0] if rest else None), "bearer"
    return ws.query_params.get("access_token"), None


def _verify(ws: WebSocket, token: str | None) -> AccessClaims | str:
    """The token's claims, or why it is refused."""
    if not token:
        return "sign in: offer the subprotocols 'bearer, <access token>' or ?access_token="
    ident = ws.app.state.mgw.identity
    try:
        claims: AccessClaims = ident.verifier.verify(token)
    except InvalidToken as exc:
        return f"access token refused: {exc.reason}"
    if ident.revocations.refuses(claims):
        return "access token refused: the session was revoked"
    if SCOPE not in claims.scope & scopes_for(claims.roles):
        return f"this needs the {SCOPE!r} scope"
    return claims


async def _refuse(ws: WebSocket, subprotocol: str | None, code: int, reason: str) -> None:
    # accepted first: a close before the handshake completes reaches the client as an
    # HTTP 403 with no reason, and the device could not tell what to do
    await ws.accept(subprotocol=subprotocol)
    await ws.close(code, reason[:120])


async def socket(ws: WebSocket) -> None:
    c = ws.app.state.mgw
    hub = c.realtime
    token, subprotocol = _offered_token(ws)
    claims = _verify(ws, token)
    if isinstance(claims, str):
        await _refuse(ws, subprotocol, CLOSE_POLICY, claims)
        return
    device_id = ws.query_params.get("device_id") or claims.session_id
    if not valid_device_id(device_id):
        await _refuse(ws, subprotocol, CLOSE_BAD_REQUEST, "device_id: 1 to 128 characters")
        return
    since_raw = ws.query_params.get("since")
    try:
        since = decode_cursor(since_raw) if since_raw else None
    except Problem:
        await _refuse(ws, subprotocol, CLOSE_BAD_REQUEST, "since: not a cursor this API returned")
        return

    await ws.accept(subprotocol=subprotocol)
    async with c.stores.pg.connection() as pg:
        seq, purged = await feed.feed_position(pg, claims.subject)
        pending = await open_commands(pg, claims.subject, [device_id, claims.session_id])
    conn = Connection(
        ws,
        claims.subject,
        device_id,
        claims.session_id,
        claims,
        seq=since[0] if since else seq,
        horizon=since[1] if since else purged,
    )
    conn.send(
        {
            "type": "hello",
            "connection_id": conn.id,
            "device_id": device_id,
            "user_id": claims.subject,
            "cursor": hub.cursor(conn),
            "heartbeat_s": c.settings.ws_heartbeat_s,
            "idle_timeout_s": c.settings.ws_idle_s,
            "token_expires_at": claims.expires_at,
        }
    )  # first, before any push can be queued
    # subscribed before the backlog is read, so a change committed from here on is heard
    await hub.join(conn)
    pump = asyncio.create_task(hub.pump(conn), name=f"ws-{conn.id}")
    try:
        if since is not None and since[0] < seq:
            conn.send({"type": "resync"})
        for cmd in pending:
            conn.send({"type": "command", "to_device": cmd.device_id, **cmd.as_dict()})
        await _receive(ws, hub, conn, c.settings.ws_idle_s)
    finally:
        await hub.leave(conn)
        conn.close(1000, "bye")
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(pump, 2)
        pump.cancel()


async def _receive(ws: WebSocket, hub: Any, conn: Connection, idle_s: float) -> None:
    while not conn.closed:
        try:
            message = await asyncio.wait_for(ws.receive(), timeout=idle_s)
        except TimeoutError:
            conn.close(CLOSE_IDLE, f"nothing heard for {idle_s:g} s: ping every heartbeat_s")
            return
        except (WebSocketDisconnect, RuntimeError):
            return
        if message["type"] == "websocket.disconnect":
            return
        conn.heard_at = time.monotonic()
        text = message.get("text")
        if text is None:
            data = message.get("bytes") or b""
            if len(data) > MAX_FRAME:
                conn.close(CLOSE_TOO_BIG, f"frames are at most {MAX_FRAME} bytes")
                return
            text = data.decode("utf-8", "replace")
        frame = parse_frame(text)
        if isinstance(frame, Violation):
            if frame.field == "frame" and len(text) > MAX_FRAME:
                conn.close(CLOSE_TOO_BIG, frame.message)
                return
            # a bad frame is answered, not fatal: the device learns what to fix
            conn.send({"type": "error", "field": frame.field, "message": frame.message})
            continue
        if frame.type == "ping":
            conn.send({"type": "pong", "at": frame.data.get("at")})
        elif frame.type == "ack":
            cid = frame.data["command_id"]
            if not await hub.acknowledge(conn, cid):
                conn.send(
                    {"type": "error", "field": "command_id", "message": "no such command here"}
                )
        elif frame.type == "auth":
            fresh = _verify(ws, frame.data["access_token"])
            if isinstance(fresh, str) or fresh.subject != conn.user_id:
                conn.close(CLOSE_POLICY, fresh if isinstance(fresh, str) else "another user")
                return
            conn.claims = fresh
            conn.send({"type": "auth", "token_expires_at": fresh.expires_at})


routes = [WebSocketRoute("/v1/ws", socket)]
