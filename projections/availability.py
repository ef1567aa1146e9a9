"""Where and how each platform record can be watched: the ``availability`` table.

Availability events are keyed by platform record, so one record's events sit in one
partition in log order and the last one for a (record, region) wins. Rows belong to a
platform record, not to a content id: which entity a record belongs to is the
canonical catalog's business (platform_titles), and queries join the two, so a merge
never has to rewrite availability.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.topics import AVAILABILITY
from domain.catalog import PLATFORMS
from projections.base import Envelope, PostgresOnly, RejectedEvent
from projections.bulk import stage
from projections.happened import happened_at_all

_REGION = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_COLS = (
    "platform",
    "platform_id",
    "region",
    "offer_type",
    "quality",
    "price",
    "currency",
    "available_from",
    "available_until",
    "web_url",
    "app_url",
    "raw_hash",
    "updated_at",
)
_TYPES = [
    "text", "text", "text", "text", "text", "numeric", "text", "timestamptz", "timestamptz",
    "text", "text", "text", "timestamptz",
]  # fmt: skip


def availability_key(platform: str, platform_id: str) -> str:
    return f"{platform}:{platform_id}"


class AvailabilityProjector(PostgresOnly):
    name = "availability"
    topics = (AVAILABILITY.name,)
    tables = ("availability",)

    def check(self, event: Envelope) -> None:
        if event.event_type not in ("AvailabilityChanged", "AvailabilityEnded"):
            raise RejectedEvent(f"availability does not handle {event.event_type}")
        p = event.payload
        if p["platform"] not in PLATFORMS:
            raise RejectedEvent(f"platform: unknown platform {p['platform']!r}")
        if event.key != availability_key(p["platform"], p["platform_id"]):
            raise RejectedEvent("record key must be platform:platform_id")
        for i, o in enumerate(p.get("offers") or ()):
            if not _REGION.match(o["region"]):
                raise RejectedEvent(f"offers[{i}].region: must be ISO 3166-1 alpha-2 like US")
            if o["price"] is not None:
                try:
                    price = Decimal(o["price"])
                except InvalidOperation:
                    raise RejectedEvent(f"offers[{i}].price: not a decimal number") from None
                if not price.is_finite() or price < 0 or price >= Decimal("1e10"):
                    raise RejectedEvent(f"offers[{i}].price: must be between 0 and 1e10")
                if not (o["currency"] and _CURRENCY.match(o["currency"])):
                    raise RejectedEvent(f"offers[{i}].currency: a price needs an ISO 4217 code")
            start, end = o["available_from"], o["available_until"]
            if start is not None and end is not None and end < start:
                raise RejectedEvent(f"offers[{i}].available_until: before available_from")

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        latest: dict[tuple[str, str], Envelope] = {}
        for e in batch:  # a record's events are in one partition, in order: the last wins
            latest[(e.payload["platform"], e.payload["platform_id"])] = e
        times = happened_at_all(list(latest.values()))
        keys = list(latest)
        await conn.execute(
            "DELETE FROM availability a USING unnest(%s::text[], %s::text[]) AS u(p, i)"
            " WHERE a.platform = u.p AND a.platform_id = u.i",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
        rows = []
        for ((platform, pid), e), at in zip(latest.items(), times, strict=True):
            if e.event_type != "AvailabilityChanged":
                continue
            p = e.payload
            # one row per region and offer type; a repeated pair keeps its last offer
            offers = {(o["region"], o["offer_type"]): o for o in p["offers"]}
            for (region, offer_type), o in offers.items():
                rows.append(
                    (
                        platform, pid, region, offer_type, o["quality"],
                        None if o["price"] is None else Decimal(o["price"]),
                        o["currency"], o["available_from"], o["available_until"],
                        p.get("web_url"), p.get("app_url"), p["raw_hash"], at,
                    )
                )  # fmt: skip
        if rows:
            await stage(conn, "availability_batch", "availability", _COLS, _TYPES, rows)
            await conn.execute("INSERT INTO availability SELECT * FROM availability_batch")


# -- queries -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OfferRow:
    platform: str
    platform_id: str
    region: str
    offer_type: str
    quality: str
    price: Decimal | None
    currency: str | None
    available_from: datetime | None
    available_until: datetime | None
    web_url: str | None
    app_url: str | None

    def available_at(self, now: datetime) -> bool:
        return (self.available_from is None or self.available_from <= now) and (
            self.available_until is None or self.available_until > now
        )

    def as_dict(self, now: datetime) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "platform_id": self.platform_id,
            "region": self.region,
            "offer_type": self.offer_type,
            "quality": self.quality,
            "price": None if self.price is None else str(self.price),
            "currency": self.currency,
            "available_from": _iso(self.available_from),
            "available_until": _iso(self.available_until),
            "available_now": self.available_at(now),
            "deep_links": {"web": self.web_url, "app": self.app_url},
        }


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat()


async def offers_for(
    conn: AsyncConnection[Any],
    content_id: str,
    region: str | None = None,
    *,
    after: tuple[str, str, str, str] | None = None,
    limit: int = 1000,
) -> list[OfferRow]:
    """Offers of every platform record of the entity, ordered by (region, platform,
    platform_id, offer_type); ``after`` is that key of the last offer seen."""
    cur = await conn.execute(
        "SELECT a.platform, a.platform_id, a.region, a.offer_type, a.quality, a.price,"
        " a.currency, a.available_from, a.available_until, a.web_url, a.app_url"
        " FROM platform_titles t JOIN availability a"
        " ON a.platform = t.platform AND a.platform_id = t.platform_id"
        " WHERE t.content_id = %(cid)s AND (%(region)s::text IS NULL OR a.region = %(region)s)"
        " AND (%(after)s::text[] IS NULL OR (a.region, a.platform, a.platform_id, a.offer_type)"
        " > (%(after)s[1], %(after)s[2], %(after)s[3], %(after)s[4]))"
        " ORDER BY a.region, a.platform, a.platform_id, a.offer_type LIMIT %(limit)s",
        {
            "cid": content_id,
            "region": region,
            "after": list(after) if after else None,
            "limit": limit,
        },  # fmt: skip
    )
    return [OfferRow(*r) for r in await cur.fetchall()]


@dataclass(frozen=True, slots=True)
class WindowItem:
    """A title arriving on, or leaving, one platform in one region."""

    content_id: str
    title: str
    year: int | None
    kind: str
    platform: str
    at: datetime  # when it arrived, or when it leaves
    offer_types: list[str]
    web_url: str | None
    app_url: str | None


async def arrivals_or_departures(
    pg: AsyncConnectionPool,
    *,
    leaving: bool,
    region: str,
    days: int,
    now: datetime,
    platform: str | None = None,
    limit: int = 20,
    cursor: tuple[datetime, str, str] | None = None,
    platforms: list[str] | None = None,
    offer_types: list[str] | None = None,
) -> list[WindowItem]:
    """New arrivals (available_from in the last ``days``, newest first) or titles leaving
    soon (available_until in the next ``days``, soonest first), one item per entity and
    platform. Keyset-paged on (date, content_id, platform), so inserts never shift a page."""
    if leaving:
        when, agg, order, cmp = "a.available_until", "min", "ASC", ">"
        window = "a.available_until > %(now)s AND a.available_until <= %(edge)s"
        edge = now + timedelta(days=days)
    else:
        when, agg, order, cmp = "a.available_from", "max", "DESC", "<"
        window = (
            "a.available_from > %(edge)s AND a.available_from <= %(now)s"
            " AND (a.available_until IS NULL OR a.available_until > %(now)s)"
        )
        edge = now - timedelta(days=days)
    sql = (
        f"SELECT t.content_id, a.platform, {agg}({when}) AS at,"
        " array_agg(DISTINCT a.offer_type ORDER BY a.offer_type), min(a.web_url), min(a.app_url)"
        " FROM availability a JOIN platform_titles t"
        " ON t.platform = a.platform AND t.platform_id = a.platform_id"
        f" WHERE a.region = %(region)s AND {window}"
        " AND (%(platform)s::text IS NULL OR a.platform = %(platform)s)"
        " AND (%(platforms)s::text[] IS NULL OR a.platform = ANY(%(platforms)s))"
        " AND (%(offers)s::text[] IS NULL OR a.offer_type = ANY(%(offers)s))"
        # a title moderation hid is not news (projections/moderation.py)
        " AND NOT EXISTS (SELECT 1 FROM moderation_titles m"
        " WHERE m.content_id = t.content_id AND m.hidden)"
        " GROUP BY t.content_id, a.platform"
    )
    if cursor is not None:
        sql += f" HAVING ({agg}({when}), t.content_id, a.platform) {cmp} (%(c0)s, %(c1)s, %(c2)s)"
    sql += f" ORDER BY at {order}, t.content_id {order}, a.platform {order} LIMIT %(limit)s"
    params = {
        "region": region, "now": now, "edge": edge, "platform": platform, "limit": limit,
        "platforms": platforms, "offers": offer_types or None,
    }  # fmt: skip
    if cursor is not None:
        params.update(c0=cursor[0], c1=cursor[1], c2=cursor[2])
    async with pg.connection() as conn:
        rows = await (await conn.execute(sql, params)).fetchall()
        ids = sorted({r[0] for r in rows})
        titles = {
            r[0]: r[1:]
            for r in await (
                await conn.execute(
                    "SELECT content_id, title, year, kind FROM content WHERE content_id = ANY(%s)",
                    (ids,),
                )
            ).fetchall()
        }
    out = []
    for cid, plat, at, types, web, app in rows:
        title, year, kind = titles.get(cid, ("", None, "movie"))
        out.append(WindowItem(cid, title, year, kind, plat, at, list(types), web, app))
    return out


async def known_regions(
    pg: AsyncConnectionPool, platform: str, ids: Sequence[str] | None = None
) -> dict[str, set[str]]:
    """platform_id -> the regions it is offered in now, for one platform's records (all,
    or ``ids``): ingest diffs a feed against it to find what the platform dropped."""
    async with pg.connection() as conn:
        cur = await conn.execute(
            "SELECT platform_id, array_agg(DISTINCT region) FROM availability"
            " WHERE platform = %s AND (%s::text[] IS NULL OR platform_id = ANY(%s::text[]))"
            " GROUP BY platform_id",
            (platform, ids, ids),
        )
        return {pid: set(regions) for pid, regions in await cur.fetchall()}
