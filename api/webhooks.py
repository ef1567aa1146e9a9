"""Platform webhooks: a signed delivery of a few records in the platform's own feed
format, through the same normalizer and the same diff as `mgw ingest`.

Refused: an unknown platform (404), one with no secret configured (503), a missing
or bad signature or a timestamp more than 5 minutes off (401), a delivery id already
seen (409), a body the platform's format cannot read (400), a delivery whose every
record is malformed (422). A partly malformed delivery appends the good records and
lists the rejected ones.
"""

from __future__ import annotations

import hashlib
import io
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.context import ctx
from api.errors import Problem
from domain.catalog import PLATFORMS, FeedError
from domain.catalog.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from streams.feeds import FeedIngest, IngestSummary, platform_lock

#: how long a delivery id is remembered: longer than the timestamp tolerance, so a
#: replayed delivery is refused by one check or the other
DELIVERY_TTL_S = 900
MAX_DELIVERY_ID = 200


async def receive(request: Request) -> Response:
    c = ctx(request)
    platform = request.path_params["platform"]
    if platform not in PLATFORMS:
        raise Problem(404, f"unknown platform {platform!r}; one of {', '.join(PLATFORMS)}",
                      field="platform")  # fmt: skip
    secret = c.settings.webhook_secret(platform)
    if not secret:
        raise Problem(
            503,
            f"webhooks for {platform} are not configured: set MGW_WEBHOOK_SECRET "
            f"or MGW_WEBHOOK_SECRET_{platform.upper()}",
            field="platform",
        )
    body = await request.body()
    problem = verify(
        secret,
        request.headers.get(TIMESTAMP_HEADER),
        request.headers.get(SIGNATURE_HEADER),
        body,
        time.time(),
    )
    if problem:
        raise Problem(401, f"{problem.field} {problem.message}", field=problem.field)
    delivery = request.headers.get(DELIVERY_HEADER, "").strip()
    if not delivery or len(delivery) > MAX_DELIVERY_ID:
        raise Problem(400, f"send a delivery id of 1..{MAX_DELIVERY_ID} characters",
                      field=DELIVERY_HEADER)  # fmt: skip
    # The delivery id is not signed, so the signature is remembered too: a captured
    # delivery sent again under a fresh id is still a replay.
    digest = hashlib.sha256(request.headers[SIGNATURE_HEADER].strip().encode()).hexdigest()
    key = f"mgw:webhook:{platform}:{delivery}"
    sig_key = f"mgw:webhook-sig:{platform}:{digest}"
    if not await c.stores.redis.set(key, b"1", nx=True, ex=DELIVERY_TTL_S):
        raise Problem(409, f"delivery {delivery!r} was received before", field=DELIVERY_HEADER)
    if not await c.stores.redis.set(sig_key, b"1", nx=True, ex=DELIVERY_TTL_S):
        await c.stores.redis.delete(key)
        raise Problem(409, "this signed delivery was received before under another id",
                      field=SIGNATURE_HEADER)  # fmt: skip
    try:
        return await _ingest(request, platform, delivery, body)
    except BaseException:
        # Nothing (or not all) was appended: let the platform's retry through.
        await c.stores.redis.delete(key, sig_key)
        raise


async def _ingest(request: Request, platform: str, delivery: str, body: bytes) -> Response:
    c = ctx(request)
    feed = FeedIngest(c.stores, c.publisher, platform)
    summary = IngestSummary(platform)
    try:
        records = feed.parse(io.BytesIO(body), f"webhook {delivery}", summary)
    except FeedError as exc:
        raise Problem(400, f"body: {exc.message}", field="body") from None
    if not records:
        rejected = summary.rejected[0] if summary.rejected else None
        detail = f"{rejected.locator}: {rejected.field}: {rejected.message}" if rejected else ""
        raise Problem(422, f"no record in the delivery could be read {detail}".strip(),
                      field=rejected.field if rejected else "body")  # fmt: skip
    async with platform_lock(c.stores, platform):
        await feed.load_state(feed.state_ids(records))
        events = feed.changes(
            records,
            summary,
            full_feed=False,
            producer=f"webhook:{platform}",
            correlation=request.headers.get("X-Request-Id") or delivery,
        )
        positions = await c.publisher.publish_many(events)
    summary.appended = len(events)
    return JSONResponse(
        {
            "delivery": delivery,
            **summary.as_dict(),
            "rejected": [
                {"locator": r.locator, "field": r.field, "message": r.message}
                for r in summary.rejected
            ],
            "positions": [p.token() for p in positions],
        },
        status_code=202,
    )


routes = [Route("/v1/webhooks/{platform}", receive, methods=["POST"])]
