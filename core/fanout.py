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
import time
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

log = logging.getLogger("mgw.fanout")

#: the kind comes before the id, so no user id can make a channel of another kind
CHANNEL_PREFIX = "mgw:rt:u:"
#: sorted set: user id -> until when (epoch seconds) a socket of theirs is known open.
#: Every hub refreshes its users well before that, so a user counts as online while any
#: process holds one of their sockets, and for at most ONLINE_TTL_S after the last closes.
ONLINE_KEY = "mgw:rt:online"
ONLINE_TTL_S = 90.0


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


async def anyone_online(redis: Any) -> bool:
    """Whether any socket is open anywhere: when none is, a projector builds no pushes."""
    return bool(await redis.zcard(ONLINE_KEY))


def mark_online(pipe: Any, users: Iterable[str]) -> None:
    """Queue on ``pipe``: these users have a socket open (the hubs call it)."""
    now = time.time()
    scores = {u: now + ONLINE_TTL_S for u in users}
    if scores:
        pipe.zadd(ONLINE_KEY, scores)
    pipe.zremrangebyscore(ONLINE_KEY, "-inf", now)


async def publish(redis: Any, pushes: Sequence[Push]) -> int:
    """Publish the pushes of users with a socket open; the rest would reach nobody, and
    packing a command per row (thousands in a catch-up batch) is what costs. Two round
    trips for the whole batch. Returns how many were published."""
    if not pushes:
        return 0
    users = list({p.user_id for p in pushes})
    now = time.time()
    scores = await redis.zmscore(ONLINE_KEY, users)
    online = {u for u, s in zip(users, scores, strict=True) if s is not None and s > now}
    if not online:
        return 0
    pipe = redis.pipeline(transaction=False)
    n = 0
    for p in pushes:
        if p.user_id in online:
            pipe.publish(channel(p.user_id), encode(p.message))
            n += 1
    await pipe.execute()
    return n
