"""Rate-limit rules (admin): read the effective rules, set one.

Routes:

* ``GET /v1/admin/rate-limits``: every effective rule with its source: ``default``
  (built in), ``env`` (``MGW_RATE_LIMITS``) or ``admin`` (set here; with who and when).
  Needs ``users:read``. Honours ``X-Consistency-Token`` (a PUT's answer).
* ``PUT /v1/admin/rate-limits/{rule}`` ``{"limit": int, "period_s": int}``: appends a
  ``RateLimitRuleSet`` event; the ``rate_limits`` projection stores it and every API
  process picks it up within its rules cache time (api/ratelimit.py ``CACHE_TTL_S``).
  Needs ``ratelimits:write``. Answers 202 with the position (``X-Consistency-Token``);
  ``"confirmed": true`` once the projection applied it within ``consistency_wait_s``
  (this process then uses it at once). Only rules the code knows (the defaults, or ones
  ``MGW_RATE_LIMITS`` names) can be set: a typo must not look like a change.

An admin rule outranks the env setting for that rule until another PUT changes it; last
write in log order wins.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.authn import require
from api.consistency import wait_for_token, wait_until_covered
from api.context import AppContext, accepted, ctx
from api.errors import Problem
from api.identity.commands import identity_event
from api.requests import read_json
from domain.identity.ratelimits import (
    DEFAULT_RULES,
    LIMIT_MAX,
    LIMIT_MIN,
    PERIOD_MAX_S,
    PERIOD_MIN_S,
    RULE_NAME,
    SOURCE_ADMIN,
    Rule,
    effective_rules,
    parse_overrides,
    validate_rule,
)
from projections.identity.rate_limits import RateLimitsProjector, stored_rules
from streams.log import Position

PROJECTOR = RateLimitsProjector()

LimitInt = Annotated[int, Field(strict=True, ge=LIMIT_MIN, le=LIMIT_MAX)]
PeriodInt = Annotated[int, Field(strict=True, ge=PERIOD_MIN_S, le=PERIOD_MAX_S)]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: requests allowed per period, per subject
    limit: LimitInt
    #: the period, in seconds
    period_s: PeriodInt


def _env_rules(c: AppContext) -> dict[str, Rule]:
    try:
        return parse_overrides(c.settings.identity.rate_limits)
    except ValueError as exc:  # refused at start when the limiter is built
        raise Problem(500, f"MGW_RATE_LIMITS is invalid: {exc}") from None


def _rule_name(request: Request, known: dict[str, Rule]) -> str:
    name: str = request.path_params["rule"]
    if not RULE_NAME.match(name):
        raise Problem(
            422,
            "rule names are 1-32 characters of a-z, 0-9 and '_', starting with a letter",
            field="rule",
        )
    if name not in DEFAULT_RULES and name not in known:
        names = ", ".join(sorted({*DEFAULT_RULES, *known}))
        raise Problem(404, f"no rate limit rule named {name!r} (known: {names})", field="rule")
    return name


async def _applied(c: AppContext, pos: Position) -> bool:
    """True once the rate_limits projection covers ``pos``; False after consistency_wait_s."""
    return await wait_until_covered(
        c.stores.pg, [PROJECTOR.name], pos, c.settings.consistency_wait_s
    )


async def get_rules(request: Request) -> Response:
    await require(request, "users:read")
    c = ctx(request)
    await wait_for_token(request, c.stores.pg, [PROJECTOR], c.settings.consistency_wait_s)
    env = _env_rules(c)
    async with c.stores.pg.connection() as conn:
        rows = await stored_rules(conn)
    admin: dict[str, Rule] = {}
    meta: dict[str, tuple[str | None, Any]] = {}
    for name, limit, period_s, set_by, set_at, _event_id in rows:
        try:
            admin[name] = validate_rule(name, limit, period_s)
        except ValueError:
            continue  # outside today's bounds: not enforced, so not listed as effective
        meta[name] = (set_by, set_at)
    items = []
    for name, eff in effective_rules(env, admin).items():
        item: dict[str, Any] = {
            "rule": name,
            "limit": eff.rule.limit,
            "period_s": eff.rule.period_s,
            "source": eff.source,
            "set_by": None,
            "set_at": None,
        }
        if eff.source == SOURCE_ADMIN:
            set_by, set_at = meta[name]
            item["set_by"], item["set_at"] = set_by, set_at.isoformat()
        items.append(item)
    return JSONResponse({"items": items})


async def put_rule(request: Request) -> Response:
    principal = await require(request, "ratelimits:write")
    c = ctx(request)
    name = _rule_name(request, _env_rules(c))
    body = await read_json(request, RuleIn)
    try:
        rule = validate_rule(name, body.limit, body.period_s)
    except ValueError as exc:  # the model checks the same bounds; kept as the one authority
        field = str(exc).partition(":")[0]
        raise Problem(
            422, str(exc), field=field if field in ("limit", "period_s") else "rule"
        ) from None
    event = identity_event(
        request,
        "RateLimitRuleSet",
        rule.name,
        {
            "rule": rule.name,
            "limit": rule.limit,
            "period_s": rule.period_s,
            "set_by": principal.user_id,
        },
        actor=principal.user_id,
    )
    pos = await c.publisher.publish(event)
    confirmed = await _applied(c, pos)
    if confirmed:
        limiter = getattr(c.identity, "limiter", None) if c.identity is not None else None
        if limiter is not None:
            limiter.forget_rules()
    return accepted(
        pos,
        rule=rule.name,
        limit=rule.limit,
        period_s=rule.period_s,
        source=SOURCE_ADMIN,
        confirmed=confirmed,
    )


routes: list[Route] = [
    Route("/v1/admin/rate-limits", get_rules, methods=["GET"]),
    Route("/v1/admin/rate-limits/{rule}", put_rule, methods=["PUT"]),
]
