"""Realtime rules, free of I/O: socket close codes, what a device may send, and the life
of a remote command (queued -> delivered -> acked, or expired).

The anchor is Jellyfin's session commands (Pause, Unpause, Seek, Stop, PlayNow on
``/Sessions/{id}/Playing``): a remote asks, the device acts. Unlike Jellyfin, a command
here is acknowledged by the device, so the sender learns whether it happened.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# -- close codes (RFC 6455 section 7.4; 4000-4999 are the application's own) -----------

#: no token, a token that fails, an expired or revoked one: RFC 6455's "policy violation"
CLOSE_POLICY = 1008
#: the server is shutting down: reconnect (to another process) with your cursor
CLOSE_GOING_AWAY = 1001
#: a frame that is not a JSON object of a known type, or too large
CLOSE_UNSUPPORTED = 1003
CLOSE_TOO_BIG = 1009
#: the device fell so far behind that its queue overflowed: reconnect with your cursor
CLOSE_TRY_AGAIN = 1013
#: a query parameter the socket cannot use (its field is in the reason)
CLOSE_BAD_REQUEST = 4400
#: nothing heard from the device for longer than the idle timeout
CLOSE_IDLE = 4408
#: the ``since`` cursor is older than the removals kept (as GET /v1/sync answers 410):
#: drop local state, GET /v1/sync without since, reconnect with its cursor
CLOSE_CURSOR_GONE = 4410

#: the largest frame a device may send (acks and pings are tiny)
MAX_FRAME = 16 * 1024

# -- remote commands ----------------------------------------------------------------------

COMMANDS = ("play", "pause", "resume", "seek", "stop", "cast")
#: what a command must carry besides its name
NEEDS_CONTENT = frozenset({"play", "cast"})
NEEDS_POSITION = frozenset({"seek"})

STATUSES = ("queued", "delivered", "acked", "expired")
OPEN = frozenset({"queued", "delivered"})
DEFAULT_TTL_S = 30.0
MAX_TTL_S = 3600.0


@dataclass(frozen=True, slots=True)
class Violation:
    field: str
    message: str


def check_command(
    command: str, content_id: str | None, position_s: float | None, ttl_s: float | None
) -> Violation | None:
    if command not in COMMANDS:
        return Violation("command", f"must be one of {', '.join(COMMANDS)}")
    if command in NEEDS_CONTENT and not content_id:
        return Violation("content_id", f"{command} needs the title to play")
    if command in NEEDS_POSITION and position_s is None:
        return Violation("position_s", "seek needs the position to go to")
    if position_s is not None and not 0 <= position_s <= 86_400 * 7:
        return Violation("position_s", "must be between 0 and 604800 seconds")
    if ttl_s is not None and not 1 <= ttl_s <= MAX_TTL_S:
        return Violation("ttl_s", f"must be between 1 and {MAX_TTL_S:g} seconds")
    return None


def status_at(stored: str, expires_at_ms: int, now_ms: int) -> str:
    """What a reader sees: a command still open past its deadline is expired even before
    the sweeper's event lands."""
    if stored in OPEN and now_ms > expires_at_ms:
        return "expired"
    return stored


def next_status(stored: str | None, event: str, at_ms: int, expires_at_ms: int) -> str | None:
    """The status an event moves a command to, None when it changes nothing. Statuses
    only move forward, and an acknowledgement after the deadline does not count: the
    sender was already told the command expired."""
    if stored is None or stored not in OPEN:
        return None
    if event == "DeviceCommandDelivered":
        return "delivered" if stored == "queued" else None
    if event == "DeviceCommandAcked":
        return "acked" if at_ms <= expires_at_ms else None
    if event == "DeviceCommandExpired":
        return "expired"
    return None


# -- frames from a device -------------------------------------------------------------------

CLIENT_TYPES = frozenset({"ping", "pong", "ack", "auth"})


@dataclass(frozen=True, slots=True)
class Frame:
    type: str
    data: dict[str, Any]


def parse_frame(text: str) -> Frame | Violation:
    """A device's frame: a JSON object with a known ``type``."""
    if len(text) > MAX_FRAME:
        return Violation("frame", f"frames are at most {MAX_FRAME} bytes")
    try:
        data = json.loads(text)
    except ValueError:
        return Violation("frame", "must be a JSON object")
    if not isinstance(data, dict):
        return Violation("frame", "must be a JSON object")
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        return Violation("type", f"must be one of {', '.join(sorted(CLIENT_TYPES))}")
    if kind == "ack" and not (isinstance(data.get("command_id"), str) and data["command_id"]):
        return Violation("command_id", "an ack names the command it acknowledges")
    if kind == "auth" and not (isinstance(data.get("access_token"), str) and data["access_token"]):
        return Violation("access_token", "auth carries a fresh access token")
    return Frame(kind, data)


def valid_device_id(raw: str) -> bool:
    return 0 < len(raw) <= 128 and "\x00" not in raw
