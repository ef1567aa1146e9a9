"""Rate-limit rules set by admins: ``rate_limit_rules``, one row per rule name.

The projector reads the identity topic but only ``RateLimitRuleSet``; the ~30 other
identity event types belong to the ``identity`` projector and pass through here without
a word (``check`` accepts them, ``apply`` skips them). For one rule the last event in log
order wins: the topic has one partition, so that order is total and a replay ends in the
same rows.

``check`` refuses only what could never be a rule (a malformed name, a limit or period
below 1). The current bounds (``validate_rule``) are applied when reading, in
``rule_overrides``: a bound that changes later never makes an old event unreadable on
replay, and a stored rule outside today's bounds is left out (logged) rather than
enforced.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.topics import IDENTITY
from domain.identity.ratelimits import RULE_NAME, Rule, validate_rule
from projections.base import Envelope, PostgresOnly, RejectedEvent, fetch_rows

log = logging.getLogger(__name__)

EVENT_TYPE = "RateLimitRuleSet"


class RateLimitsProjector(PostgresOnly):
    name = "rate_limits"
    topics: tuple[str, ...] = (IDENTITY.name,)
    tables: tuple[str, ...] = ("rate_limit_rules",)

    def check(self, event: Envelope) -> None:
        if event.event_type != EVENT_TYPE:
            return  # another projector's event: not ours to judge
        p = event.payload
        if not isinstance(p.get("rule"), str) or not RULE_NAME.match(p["rule"]):
            raise RejectedEvent(f"rule: {p.get('rule')!r} is not a rule name")
        if p["limit"] < 1:
            raise RejectedEvent("limit: must be 1 or more")
        if p["period_s"] < 1:
            raise RejectedEvent("period_s: must be 1 or more")
        for text in (p.get("set_by"), p.get("actor_id")):
            if text is not None and "\x00" in text:
                raise RejectedEvent("text must not contain NUL characters")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        # The last event per rule in (partition, offset) order wins; earlier ones in the
        # batch would be overwritten anyway, so write one row per rule.
        latest: dict[str, tuple[Any, ...]] = {}
        for e in sorted(batch, key=lambda e: (e.partition, e.offset)):
            if e.event_type != EVENT_TYPE:
                continue
            p = e.payload
            latest[p["rule"]] = (
                p["rule"],
                p["limit"],
                p["period_s"],
                p.get("set_by") or p.get("actor_id"),
                e.happened_at,
                e.event_id,
            )
        if not latest:
            return
        async with conn.cursor() as cur:
            await cur.executemany(
                'INSERT INTO rate_limit_rules (rule, "limit", period_s, set_by, set_at, event_id)'
                " VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (rule) DO UPDATE SET"
                ' "limit" = EXCLUDED."limit", period_s = EXCLUDED.period_s,'
                " set_by = EXCLUDED.set_by, set_at = EXCLUDED.set_at,"
                " event_id = EXCLUDED.event_id",
                list(latest.values()),
            )


# -- queries -----------------------------------------------------------------


async def stored_rules(
    conn: AsyncConnection[Any],
) -> list[tuple[str, int, int, str | None, datetime, str | None]]:
    """Every stored row as (rule, limit, period_s, set_by, set_at, event_id), by rule."""
    rows = await fetch_rows(
        conn,
        'SELECT rule, "limit", period_s, set_by, set_at, event_id'
        " FROM rate_limit_rules ORDER BY rule",
    )
    return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def rule_overrides(pool: AsyncConnectionPool) -> dict[str, Rule]:
    """The rules admins set, by name, within today's bounds (others are logged and left
    out: the default or env rule applies to them)."""
    async with pool.connection() as conn:
        rows = await stored_rules(conn)
    rules: dict[str, Rule] = {}
    for name, limit, period_s, *_ in rows:
        try:
            rules[name] = validate_rule(name, limit, period_s)
        except ValueError as exc:
            log.warning("stored rate limit rule %r ignored: %s", name, exc)
    return rules
