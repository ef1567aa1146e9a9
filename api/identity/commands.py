"""The one way identity commands are made and answered.

A route builds its event with ``identity_event`` (the audit fields every identity event
carries come from the request) and appends it with ``decide``, which waits for the outcome
the identity projector wrote for it (docs/identity.md), or with ``append`` when nothing
waits on an answer.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from api.consistency import wait_until_covered
from api.context import AppContext
from api.errors import Problem
from core.backoff import Backoff
from core.events import Event
from core.ids import utcnow
from projections.identity.accounts import outcome_of

#: a decision is waited for at 1 ms doubling to 20 ms: sign-ins are latency-bound
_DECIDE_POLL = Backoff(first=0.001, cap=0.02, jitter=False)


def request_meta(request: Request, actor_id: str | None = None) -> dict[str, Any]:
    """The audit fields every identity event carries."""
    ua = request.headers.get("user-agent")
    return {
        "actor_id": actor_id,
        "ip": request.client.host if request.client else None,
        "user_agent": ua[:256] if ua else None,
    }


def identity_event(
    request: Request, event_type: str, key: str, payload: dict[str, Any], actor: str | None = None
) -> Event:
    return Event(
        event_type,
        key,
        {**payload, **request_meta(request, actor)},
        occurred_at=utcnow(),
        correlation_id=request.headers.get("X-Request-Id"),
        producer="api",
    )


async def decide(c: AppContext, event: Event) -> tuple[str, dict[str, Any]]:
    """Append ``event`` and wait for the identity projector's outcome for it."""
    pos = await c.publisher.publish(event)
    # The outcome and the watermark commit in one transaction: once the watermark covers
    # the event, no outcome means the projector refused the event itself.
    wait_s = max(c.settings.consistency_wait_s, 5.0)
    if not await wait_until_covered(c.stores.pg, ["identity"], pos, wait_s, poll=_DECIDE_POLL):
        raise Problem(
            503,
            "the identity projection has not caught up; retry",
            headers={"Retry-After": "1"},
        )
    async with c.stores.pg.connection() as conn:
        found = await outcome_of(conn, event.event_id)
    return found if found is not None else ("rejected", {})


async def append(c: AppContext, event: Event) -> None:
    await c.publisher.publish(event)
