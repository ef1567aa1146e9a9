"""Pushes to connected devices: what a projector changed, published on Redis once its
batch has committed.

Every user has one channel. A projector that announces (``Projector.announce``) turns
the rows it wrote into ``Push`` messages; the pipeline publishes them after the commit,
so a device never hears of a change a reader could not yet see. Every API process
subscribes to the channels of the users whose sockets it holds, so a fleet grows by
adding processes and each hears only its own users.

Pub/sub is at most once: a publish lost to a Redis hiccup or a crash between commit and
publish is not retried. Nothing is lost for the device, because every push that matters
carries a cursor into a durable feed (the library's sync feed, the notification list)
and a socket that reconnects, or sees a gap, reads the feed from its cursor.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

log = logging.getLogger("mgw.fanout")

#: the kind comes before the id, so no user id can make a channel of another kind
CHANNEL_PREFIX = "mgw:rt:u:"


class Push(NamedTuple):
    """One message for one user's devices. ``message["type"]`` names it; a
    ``message["to_device"]`` limits it to that device's sockets."""

    user_id: str
    message: dict[str, Any]


def channel(user_id: str) -> str:
    return CHANNEL_PREFIX + user_id


def user_of(channel_name: str | bytes) -> str:
    name = channel_name.decode() if isinstance(channel_name, bytes) else channel_name
    return name[len(CHANNEL_PREFIX) :]


def encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"), default=str)


async def publish(redis: Any, pushes: Sequence[Push]) -> None:
    """One round trip for the whole batch (a pipeline without MULTI)."""
    if not pushes:
        return
    pipe = redis.pipeline(transaction=False)
    for p in pushes:
        pipe.publish(channel(p.user_id), encode(p.message))
    await pipe.execute()
