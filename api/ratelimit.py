"""Rate limits: GCRA in Redis, one Lua script, and the 429 answer.

**Algorithm.** GCRA (the generic cell rate algorithm, a leaky bucket that stores one
number per subject): a rule of ``limit`` per ``period_s`` spaces requests ``T =
period/limit`` apart and tolerates a burst of ``limit``. The bucket stores the
*theoretical arrival time* (TAT) of the next request; a request at ``now`` is allowed when
``max(TAT, now) - now <= T * (limit - 1)`` and then moves TAT forward by ``T``; a refused
request moves nothing. Times are integer microseconds and ``T`` is rounded up, so the
arithmetic in Lua's doubles is exact and never allows more than ``limit`` per period.

**One script, server time.** The read, decision and write run in one Lua script
(``EVALSHA`` through redis-py's ``register_script``), so concurrent requests, from one
process or many, are serialized by Redis and can never together pass more than the
limit. The script reads the clock with Redis ``TIME``: every API process agrees on
"now" whatever its own clock says.

**Several subjects.** ``enforce`` checks every subject of one request (the client
address and the account, say) in the same script call, all or nothing: a request refused
for one subject consumes nothing from the others, so a locked-out account does not also
drain its address's budget.

**Keys.** ``mgw:rl:<rule>:<kind>:<sha256(subject)[:32]>``, e.g. ``mgw:rl:login:acct:9f2c…``:
the subject is hashed so email addresses never appear in Redis (KEYS, MONITOR, a dump). Each key
expires when its bucket would be full again, so idle subjects vanish. Account subjects
are lower-cased before hashing (``acct:Alice@X`` and ``acct:alice@x`` share a bucket);
IPv6 addresses count per /64 (one host usually owns a whole /64, and could otherwise
rotate addresses at will); IPv4-mapped IPv6 addresses count as the IPv4 address.

**Client address.** ``client_ip`` is the TCP peer (``request.client.host``); it never
reads ``X-Forwarded-For``. Anyone can send that header, so trusting it lets a client
choose a fresh address per request and bypass every per-address limit. Behind a reverse
proxy, run uvicorn with ``--proxy-headers --forwarded-allow-ips=<the proxy>``: it then
rewrites the peer from the header only for connections from that proxy, and
``request.client`` is already the real client here.

**When Redis fails: fail open.** If Redis cannot be reached or errors, the request is
allowed, a warning is logged (at most every ``WARN_EVERY_S``) and
``mgw_ratelimit_errors_total{store="redis"}`` counts it. Failing closed would turn a
Redis outage into a sign-in, registration and token-refresh outage for every user: every
app would lose its session at the next refresh. The limits are a brake on guessing, not
the only defence (argon2 costs, account lockout and single-use codes stand without them),
so a short window without them is the smaller harm. Alert on the counter.

**Rules.** ``RulesSource`` gives the effective rules: ``DEFAULT_RULES`` ←
``MGW_RATE_LIMITS`` ← rules admins set (``rate_limit_rules``, read through a per-process
cache at most ``CACHE_TTL_S`` old; if the database cannot be read the last rules read, or
the defaults and env, stay in force and ``mgw_ratelimit_errors_total{store="rules"}``
counts it).
"""

from __future__ import annotations

import hashlib
import inspect
import ipaddress
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter
from psycopg_pool import AsyncConnectionPool
from redis.exceptions import RedisError
from starlette.requests import Request

from api.errors import Problem
from domain.identity.ratelimits import (
    DEFAULT_RULES,
    EffectiveRule,
    Rule,
    effective_rules,
    parse_overrides,
)

log = logging.getLogger(__name__)

RATELIMIT_ERRORS = Counter(
    "mgw_ratelimit_errors_total",
    "Rate limit checks that failed open (store=redis) or ran on stale rules (store=rules)",
    ["store"],
)
RATELIMIT_REFUSED = Counter(
    "mgw_ratelimit_refused_total", "Requests refused by a rate limit (429)", ["rule"]
)

KEY_PREFIX = "mgw:rl:"
CACHE_TTL_S = 2.0
WARN_EVERY_S = 10.0

# KEYS: one bucket per subject. ARGV[1]: emission interval T, ARGV[2]: burst tolerance
# tau = T * (limit - 1), both integer microseconds. Returns {allowed (0|1), remaining,
# reset_us (until the fullest bucket is full again), retry_us (0 when allowed)}.
_GCRA = """
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local T = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tats = {}
local worst = now
local wait = 0
for i, key in ipairs(KEYS) do
  local tat = tonumber(redis.call('GET', key) or '0') or 0
  if tat < now then tat = now end
  tats[i] = tat
  if tat > worst then worst = tat end
  if tat - now - tau > wait then wait = tat - now - tau end
end
if wait > 0 then
  return {0, 0, worst - now, wait}
end
for i, key in ipairs(KEYS) do
  local new_tat = tats[i] + T
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
end
local used = worst + T - now
local remaining = math.floor((tau - used) / T) + 1
if remaining < 0 then remaining = 0 end
return {1, remaining, used, 0}
"""

_KIND = re.compile(r"^[a-z]{1,16}$")


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    #: requests still allowed right now (0 when refused)
    remaining: int
    #: seconds until the quota is whole again
    reset_s: int
    #: seconds to wait before a retry can pass (0 when allowed)
    retry_after_s: int


def headers(decision: Decision) -> dict[str, str]:
    """``RateLimit-*`` headers (draft-ietf-httpapi-ratelimit-headers), and ``Retry-After``
    for a refusal; add them to a successful answer too."""
    out = {
        "RateLimit-Limit": str(decision.limit),
        "RateLimit-Remaining": str(decision.remaining),
        "RateLimit-Reset": str(decision.reset_s),
    }
    if not decision.allowed:
        out["Retry-After"] = str(max(1, decision.retry_after_s))
    return out


def client_ip(request: Request) -> str:
    """The TCP peer's address (see the module docstring for why not X-Forwarded-For)."""
    return request.client.host if request.client else "unknown"


def _bucket_ip(value: str) -> str:
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return value  # not an address ("testclient", a unix socket): as given
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def subject_key(rule: str, subject: str) -> str:
    """The Redis key of ``subject``'s bucket for ``rule``; the subject is hashed."""
    kind, sep, value = subject.partition(":")
    if not sep or not _KIND.match(kind):
        kind, value = "s", subject
    elif kind == "ip":
        value = _bucket_ip(value)
    elif kind == "acct":
        value = value.strip().lower()
    digest = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:32]
    return f"{KEY_PREFIX}{rule}:{kind}:{digest}"


def _intervals(rule: Rule) -> tuple[int, int]:
    period_us = rule.period_s * 1_000_000
    t = -(-period_us // rule.limit)  # rounded up: never more than limit per period
    return t, t * (rule.limit - 1)


def _seconds(us: int) -> int:
    return max(0, math.ceil(us / 1_000_000))


RulesProvider = Callable[[], Mapping[str, Rule] | Awaitable[Mapping[str, Rule]]]

_last_warned: dict[str, float] = {}


def _warn(store: str, message: str, *args: Any) -> None:
    RATELIMIT_ERRORS.labels(store).inc()
    now = time.monotonic()
    if now - _last_warned.get(store, -math.inf) >= WARN_EVERY_S:
        _last_warned[store] = now
        log.warning(message, *args)


class RateLimiter:
    """GCRA limiter over ``redis`` (a redis.asyncio client) with the rules
    ``rules_provider()`` returns (a mapping, or an awaitable of one)."""

    def __init__(self, redis: Any, rules_provider: RulesProvider) -> None:
        self.redis = redis
        self.rules_provider = rules_provider
        self._script = redis.register_script(_GCRA)

    async def rules(self) -> Mapping[str, Rule]:
        try:
            found = self.rules_provider()
            if inspect.isawaitable(found):
                found = await found
            return found
        except Exception as exc:  # the provider's own fallbacks failed too
            _warn("rules", "rate limit rules unavailable, using the defaults: %r", exc)
            return DEFAULT_RULES

    async def rule(self, name: str) -> Rule:
        rules = await self.rules()
        found = rules.get(name) or DEFAULT_RULES.get(name)
        if found is None:
            raise KeyError(f"no rate limit rule named {name!r}")
        return found

    def forget_rules(self) -> None:
        """Drop cached rules (after an admin change this process saw applied)."""
        forget = getattr(self.rules_provider, "forget", None)
        if callable(forget):
            forget()

    async def hit(self, rule_name: str, subject: str) -> Decision:
        """Count one request of ``subject`` against ``rule_name``."""
        return await self.check(rule_name, [subject])

    async def check(self, rule_name: str, subjects: list[str]) -> Decision:
        """Count one request against every subject's bucket, all or nothing: allowed only
        if every bucket has room, and then taken from each. The decision is the tightest
        (least remaining, latest reset, longest retry)."""
        rule = await self.rule(rule_name)
        if not subjects:
            raise ValueError("at least one subject is needed")
        keys = list(dict.fromkeys(subject_key(rule.name, s) for s in subjects))
        t, tau = _intervals(rule)
        try:
            allowed, remaining, reset_us, retry_us = await self._script(keys=keys, args=[t, tau])
        except (RedisError, OSError) as exc:
            _warn("redis", "rate limit %s not checked, allowing (Redis): %r", rule.name, exc)
            return Decision(True, rule.limit, rule.limit, 0, 0)
        if not allowed:
            RATELIMIT_REFUSED.labels(rule.name).inc()
        return Decision(
            allowed=bool(allowed),
            limit=rule.limit,
            remaining=int(remaining),
            reset_s=_seconds(int(reset_us)),
            retry_after_s=max(1, _seconds(int(retry_us))) if not allowed else 0,
        )

    async def enforce(self, request: Request, rule_name: str, *subjects: str) -> Decision:
        """Check ``subjects`` (default: the client address); 429 with ``Retry-After`` and
        ``RateLimit-*`` headers when any is exhausted. Returns the decision (also left in
        ``request.scope["mgw.ratelimit"]``) so the caller can send the same headers."""
        wanted = list(subjects) or [f"ip:{client_ip(request)}"]
        decision = await self.check(rule_name, wanted)
        request.scope["mgw.ratelimit"] = decision
        if not decision.allowed:
            raise Problem(
                429,
                f"too many {rule_name} requests; retry in {decision.retry_after_s}s",
                headers=headers(decision),
            )
        return decision


class RulesSource:
    """The effective rules for a ``RateLimiter``: defaults ← ``env`` (the
    ``MGW_RATE_LIMITS`` text, parsed now so a bad setting fails at start) ← admin rules
    from ``pg`` (none without a pool), cached ``ttl_s``."""

    def __init__(
        self,
        pg: AsyncConnectionPool | None,
        env: str | Mapping[str, Rule] = "",
        ttl_s: float = CACHE_TTL_S,
    ) -> None:
        self.pg = pg
        self.env: dict[str, Rule] = parse_overrides(env) if isinstance(env, str) else dict(env)
        self.ttl_s = ttl_s
        self._admin: dict[str, Rule] = {}
        self._loaded_at: float | None = None
        self._refreshing = False

    def forget(self) -> None:
        self._loaded_at = None

    async def admin(self) -> dict[str, Rule]:
        if self.pg is None:
            return {}
        loaded = self._loaded_at
        if loaded is not None and (self._refreshing or time.monotonic() - loaded < self.ttl_s):
            return self._admin  # while one request refreshes, the others use the last rules
        from projections.identity.rate_limits import rule_overrides

        self._refreshing = True
        started = time.monotonic()
        try:
            self._admin = await rule_overrides(self.pg)
        except Exception as exc:
            _warn("rules", "admin rate limit rules not read, keeping the last ones: %r", exc)
        finally:
            self._loaded_at = started
            self._refreshing = False
        return self._admin

    async def effective(self) -> dict[str, EffectiveRule]:
        return effective_rules(self.env, await self.admin())

    async def __call__(self) -> dict[str, Rule]:
        return {name: e.rule for name, e in (await self.effective()).items()}


async def limit(request: Request, rule: str, *subjects: str) -> None:
    """Count this request against ``rule`` for its client address and ``subjects``
    (``acct:<id or email>``, ...); 429 when any is spent. Every identity route calls this
    one door, so a rule means the same everywhere."""
    limiter = request.app.state.mgw.identity.limiter
    if limiter is not None:
        await limiter.enforce(request, rule, f"ip:{client_ip(request)}", *subjects)


class RateLimitHeaders:
    """ASGI middleware: a response to a rate-limited request that was let through carries
    the ``RateLimit-*`` headers of the tightest rule it met, so clients can pace themselves
    before meeting a 429 (which carries them already)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Any) -> None:
            decision = scope.get("mgw.ratelimit")
            if message["type"] == "http.response.start" and decision is not None:
                present = {k.lower() for k, _ in message.get("headers", [])}
                extra = [
                    (k.lower().encode(), v.encode())
                    for k, v in headers(decision).items()
                    if k.lower().encode() not in present
                ]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)
