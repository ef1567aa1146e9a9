"""Rate limits: the GCRA limiter against real Redis, the rules and their overrides, and
the rate_limits projection through real PostgreSQL and the embedded log."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from starlette.requests import Request

from api.errors import Problem
from api.ratelimit import (
    KEY_PREFIX,
    Decision,
    RateLimiter,
    RulesSource,
    client_ip,
    headers,
    subject_key,
)
from core.events import Event
from core.topics import IDENTITY
from domain.identity.ratelimits import (
    DEFAULT_RULES,
    SOURCE_ADMIN,
    SOURCE_DEFAULT,
    SOURCE_ENV,
    Rule,
    effective_rules,
    parse_overrides,
    validate_rule,
)
from projections import maintenance
from projections.base import Stores
from projections.identity.rate_limits import RateLimitsProjector, rule_overrides, stored_rules
from streams.embedded import EmbeddedLog
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    client = aioredis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


def _limiter(redis: Any, *rules: Rule) -> RateLimiter:
    table = {r.name: r for r in rules}
    return RateLimiter(redis, lambda: table)


def _request(host: str = "203.0.113.7") -> Request:
    return Request({"type": "http", "method": "POST", "client": (host, 50000), "headers": []})


async def _rl_keys(redis: Any) -> list[str]:
    return sorted([k.decode() async for k in redis.scan_iter(match=f"{KEY_PREFIX}*")])


# -- the limiter ---------------------------------------------------------------------


async def test_burst_of_exactly_limit_then_refused(redis: Any) -> None:
    rl = _limiter(redis, Rule("burst", 5, 2))
    got = [await rl.hit("burst", "ip:10.0.0.1") for _ in range(5)]
    assert all(d.allowed for d in got)
    assert [d.remaining for d in got] == [4, 3, 2, 1, 0]
    assert all(d.limit == 5 and d.retry_after_s == 0 for d in got)
    # the quota is whole again within one period, never later
    assert all(1 <= d.reset_s <= 2 for d in got)

    refused = await rl.hit("burst", "ip:10.0.0.1")
    assert not refused.allowed
    assert refused.remaining == 0 and refused.limit == 5
    assert 1 <= refused.retry_after_s <= refused.reset_s <= 2
    # refusals do not dig the hole deeper: still refused, same horizon
    again = await rl.hit("burst", "ip:10.0.0.1")
    assert not again.allowed and again.reset_s <= refused.reset_s


async def test_allows_again_after_waiting(redis: Any) -> None:
    rl = _limiter(redis, Rule("quick", 2, 1))
    assert (await rl.hit("quick", "ip:10.0.0.2")).allowed
    assert (await rl.hit("quick", "ip:10.0.0.2")).allowed
    refused = await rl.hit("quick", "ip:10.0.0.2")
    assert not refused.allowed and refused.retry_after_s >= 1
    await asyncio.sleep(refused.retry_after_s)
    later = await rl.hit("quick", "ip:10.0.0.2")
    assert later.allowed


async def test_subjects_are_independent(redis: Any) -> None:
    rl = _limiter(redis, Rule("login", 2, 60), Rule("register", 2, 60))
    for _ in range(2):
        assert (await rl.hit("login", "ip:10.0.0.3")).allowed
    assert not (await rl.hit("login", "ip:10.0.0.3")).allowed
    # another address, and the same address under another rule, each have a full bucket
    other = await rl.hit("login", "ip:10.0.0.4")
    assert other.allowed and other.remaining == 1
    assert (await rl.hit("register", "ip:10.0.0.3")).remaining == 1


async def test_headers_follow_the_decision(redis: Any) -> None:
    rl = _limiter(redis, Rule("hdr", 3, 30))
    first = await rl.hit("hdr", "acct:u1")
    h = headers(first)
    assert h == {
        "RateLimit-Limit": "3",
        "RateLimit-Remaining": "2",
        "RateLimit-Reset": str(first.reset_s),
    }
    await rl.hit("hdr", "acct:u1")
    await rl.hit("hdr", "acct:u1")
    refused = await rl.hit("hdr", "acct:u1")
    h = headers(refused)
    assert h["RateLimit-Remaining"] == "0" and h["RateLimit-Limit"] == "3"
    assert int(h["Retry-After"]) == refused.retry_after_s >= 1
    assert int(h["Retry-After"]) <= int(h["RateLimit-Reset"]) <= 30


async def test_enforce_checks_every_subject_all_or_nothing(redis: Any) -> None:
    rl = _limiter(redis, Rule("login", 3, 60))
    req = _request("198.51.100.9")
    assert client_ip(req) == "198.51.100.9"
    ip, acct = f"ip:{client_ip(req)}", "acct:victim@example.com"

    ok = await rl.enforce(req, "login", ip, acct)
    assert ok.allowed and ok.remaining == 2
    assert req.scope["mgw.ratelimit"] == ok
    # the account is hammered from elsewhere until it is exhausted
    await rl.hit("login", acct)
    await rl.hit("login", acct)
    with pytest.raises(Problem) as caught:
        await rl.enforce(req, "login", ip, acct)
    p = caught.value
    assert p.status == 429
    assert p.headers["RateLimit-Limit"] == "3" and p.headers["RateLimit-Remaining"] == "0"
    assert int(p.headers["Retry-After"]) >= 1 and int(p.headers["RateLimit-Reset"]) >= 1
    # the refusal took nothing from the address: it has used one of three
    assert (await rl.hit("login", ip)).remaining == 1
    # the tightest decision comes back: the account (1 left) binds, not the address (2)
    fresh = "acct:other@example.com"
    await rl.hit("login", fresh)
    tight = await rl.enforce(req, "login", "ip:198.51.100.10", fresh)
    assert tight.allowed and tight.remaining == 1
    # no subject given: the client address
    assert (await rl.enforce(_request("192.0.2.1"), "login")).remaining == 2


async def test_keys_hide_subjects_and_expire(redis: Any) -> None:
    rl = _limiter(redis, Rule("login", 5, 60))
    await rl.hit("login", "acct:Alice.Secret@Example.COM")
    await rl.hit("login", "acct:alice.secret@example.com")  # the same account
    await rl.hit("login", "ip:2001:db8:1:2::1")
    await rl.hit("login", "ip:2001:db8:1:2:ffff::9")  # the same /64
    keys = await _rl_keys(redis)
    assert len(keys) == 2
    for key in keys:
        assert key.startswith("mgw:rl:login:")
        lowered = key.lower()
        assert "alice" not in lowered and "example" not in lowered and "2001" not in lowered
        ttl_ms = await redis.pttl(key)
        assert 0 < ttl_ms <= 60_000
    acct = subject_key("login", "acct:alice.secret@example.com")
    assert acct in keys and acct.split(":")[3] == "acct"
    d = await rl.hit("login", "acct:ALICE.SECRET@example.com")
    assert d.remaining == 2
    # IPv4-mapped IPv6 counts as the IPv4 address; other /64s are other buckets
    assert subject_key("r", "ip:::ffff:192.0.2.5") == subject_key("r", "ip:192.0.2.5")
    assert subject_key("r", "ip:2001:db8:1:3::1") != subject_key("r", "ip:2001:db8:1:2::1")
    assert subject_key("r", "ip:10.0.0.1") != subject_key("r2", "ip:10.0.0.1")


async def test_idle_bucket_key_vanishes(redis: Any) -> None:
    rl = _limiter(redis, Rule("tiny", 10, 1))
    await rl.hit("tiny", "ip:10.9.9.9")
    key = subject_key("tiny", "ip:10.9.9.9")
    # one hit of ten per second: the bucket is full again after 0.1 s, and the key goes
    assert 0 < await redis.pttl(key) <= 100
    for _ in range(50):
        if not await redis.exists(key):
            break
        await asyncio.sleep(0.02)
    assert not await redis.exists(key)


async def test_concurrent_hits_never_pass_more_than_the_limit(redis: Any, redis_url: str) -> None:
    rule = Rule("storm", 25, 60)
    others = [aioredis.from_url(redis_url) for _ in range(3)]  # as several API processes
    try:
        limiters = [_limiter(c, rule) for c in [redis, *others]]
        decisions = await asyncio.gather(
            *(limiters[i % 4].hit("storm", "acct:target") for i in range(400)),
            *(limiters[i % 4].enforce(_request(), "storm", "acct:x") for i in range(3)),
        )
    finally:
        for c in others:
            await c.aclose()
    storm = decisions[:400]
    assert sum(d.allowed for d in storm) == 25
    assert sorted(d.remaining for d in storm if d.allowed) == list(range(25))
    assert all(d.retry_after_s >= 1 for d in storm if not d.allowed)


async def test_unknown_rule_and_missing_subject(redis: Any) -> None:
    rl = _limiter(redis, Rule("only", 1, 1))
    with pytest.raises(KeyError):
        await rl.hit("nope", "ip:1.2.3.4")
    with pytest.raises(ValueError):
        await rl.check("only", [])
    # a provider without a default rule still gets the default
    assert (await rl.hit("login", "ip:1.2.3.4")).limit == DEFAULT_RULES["login"].limit


async def test_redis_down_fails_open_and_counts(tmp_path: Any) -> None:
    def errors() -> float:
        return REGISTRY.get_sample_value("mgw_ratelimit_errors_total", {"store": "redis"}) or 0.0

    before = errors()
    dead = aioredis.from_url(f"unix://{tmp_path}/no-redis.sock")
    try:
        rl = _limiter(dead, Rule("login", 1, 60))
        for _ in range(3):  # over the limit, but nothing can count it
            d = await rl.enforce(_request(), "login", "ip:10.0.0.1")
            assert d == Decision(True, 1, 1, 0, 0)
    finally:
        await dead.aclose()
    assert errors() == before + 3


# -- rules -----------------------------------------------------------------------------


def test_defaults_cover_the_guarded_actions() -> None:
    for name in ("login", "register", "token", "password_reset", "mfa", "pin", "device"):
        rule = DEFAULT_RULES[name]
        assert rule.name == name and validate_rule(name, rule.limit, rule.period_s) == rule
    assert DEFAULT_RULES["pin"].limit / DEFAULT_RULES["pin"].period_s < (
        DEFAULT_RULES["login"].limit / DEFAULT_RULES["login"].period_s
    )


def test_parse_overrides() -> None:
    assert parse_overrides("") == {} and parse_overrides(" , ") == {}
    got = parse_overrides(" login = 10/60, register=5 / 3600 ,")
    assert got == {"login": Rule("login", 10, 60), "register": Rule("register", 5, 3600)}
    assert ",".join(r.spec() for r in got.values()) == "login=10/60,register=5/3600"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("login", ["'login'", "name=limit/period"]),
        ("login=10", ["'login=10'", "name=limit/period"]),
        ("=10/60", ["'=10/60'"]),
        ("login=ten/60", ["'login=ten/60'", "limit"]),
        ("login=10/1m", ["'login=10/1m'", "period"]),
        ("login=-1/60", ["'login=-1/60'", "limit"]),
        ("login=0/60", ["'login=0/60'", "limit"]),
        ("login=10/0", ["'login=10/0'", "period_s"]),
        ("login=10/86401", ["'login=10/86401'", "period_s"]),
        ("login=1000001/60", ["'login=1000001/60'", "limit"]),
        ("Login=1/60", ["'Login=1/60'", "name"]),
        ("ok=1/1,bad rule=1/1", ["'bad rule=1/1'", "name"]),
        ("login=1/60,login=2/60", ["'login=2/60'", "twice"]),
        ("login=1²/60", ["limit"]),
        ("login=" + "9" * 40 + "/60", ["limit"]),
    ],
)
def test_parse_overrides_errors_name_the_item(text: str, names: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        parse_overrides(text)
    for part in names:
        assert part in str(caught.value)


def test_validate_rule_bounds() -> None:
    assert validate_rule("a", 1, 1) == Rule("a", 1, 1)
    assert validate_rule("a" + "b" * 31, 1_000_000, 86_400).limit == 1_000_000
    for name, limit, period, field in [
        ("", 1, 1, "name"),
        ("1abc", 1, 1, "name"),
        ("a" * 33, 1, 1, "name"),
        ("a-b", 1, 1, "name"),
        ("a", 0, 1, "limit"),
        ("a", True, 1, "limit"),
        ("a", 1, 86_401, "period_s"),
        ("a", 1, 0, "period_s"),
    ]:
        with pytest.raises(ValueError, match=f"^{field}:"):
            validate_rule(name, limit, period)


def test_effective_rules_precedence() -> None:
    env = {"login": Rule("login", 7, 70), "extra": Rule("extra", 1, 1)}
    admin = {"login": Rule("login", 3, 30), "mfa": Rule("mfa", 4, 40)}
    eff = effective_rules(env, admin)
    assert (eff["login"].rule, eff["login"].source) == (Rule("login", 3, 30), SOURCE_ADMIN)
    assert (eff["mfa"].rule.limit, eff["mfa"].source) == (4, SOURCE_ADMIN)
    assert (eff["extra"].rule.limit, eff["extra"].source) == (1, SOURCE_ENV)
    assert (eff["pin"].rule, eff["pin"].source) == (DEFAULT_RULES["pin"], SOURCE_DEFAULT)
    assert list(eff) == sorted(eff)


# -- the projection ------------------------------------------------------------------------


@pytest.fixture
async def elog(db_uri: str) -> AsyncIterator[EmbeddedLog]:
    log = await EmbeddedLog(db_uri).open()
    yield log
    await log.close()


def _rule_set(rule: str, limit: int, period_s: int, by: str = "admin-1") -> Event:
    payload = {"rule": rule, "limit": limit, "period_s": period_s, "set_by": by, "actor_id": by}
    return Event("RateLimitRuleSet", rule, payload, producer="test")


async def test_projection_keeps_the_last_rule_and_ignores_other_events(
    elog: EmbeddedLog, stores: Stores
) -> None:
    pub = Publisher(elog)
    await pub.publish(_rule_set("login", 20, 60))
    await pub.publish(
        Event("LoginFailed", "u-1", {"email": "x@example.com", "reason": "bad_password"})
    )
    await pub.publish(_rule_set("pin", 3, 600, by="admin-2"))
    last = _rule_set("login", 8, 120, by="admin-3")
    await pub.publish(last)
    records = await elog.read(IDENTITY.name, 0, 0, 1000)
    assert len(records) == 4

    projector = RateLimitsProjector()
    pipeline = ProjectionPipeline(projector, stores, elog)
    # in two batches: the later event wins across batches as within one
    first = await pipeline.process(records[:2])
    second = await pipeline.process(records[2:])
    assert first.dead_letters == second.dead_letters == 0
    assert first.applied + second.applied == 4

    assert await rule_overrides(stores.pg) == {
        "login": Rule("login", 8, 120),
        "pin": Rule("pin", 3, 600),
    }
    async with stores.pg.connection() as conn:
        rows = {r[0]: r for r in await stored_rules(conn)}
    assert rows["login"][3] == "admin-3" and rows["login"][5] == last.event_id
    assert abs((rows["login"][4] - last.occurred_at).total_seconds()) < 0.001

    # redelivery changes nothing
    checksum = await maintenance.checksum(stores, projector)
    again = await pipeline.process(records)
    assert (again.applied, again.skipped) == (0, 4)
    assert await maintenance.checksum(stores, projector) == checksum

    # the effective rules: defaults <- env <- admin
    source = RulesSource(stores.pg, "login=10/60,register=4/3600")
    eff = await source.effective()
    assert (eff["login"].rule.limit, eff["login"].source) == (8, SOURCE_ADMIN)
    assert (eff["register"].rule.limit, eff["register"].source) == (4, SOURCE_ENV)
    assert (eff["mfa"].rule, eff["mfa"].source) == (DEFAULT_RULES["mfa"], SOURCE_DEFAULT)
    assert (await source())["pin"] == Rule("pin", 3, 600)


async def test_projection_refuses_malformed_rules_and_limiter_reads_new_ones(
    elog: EmbeddedLog, stores: Stores
) -> None:
    pub = Publisher(elog)
    await pub.publish(_rule_set("Bad-Name", 1, 1))
    await pub.publish(_rule_set("login", 0, 60))
    await pub.publish(_rule_set("login", 2, 60))
    records = await elog.read(IDENTITY.name, 0, 0, 1000)
    pipeline = ProjectionPipeline(RateLimitsProjector(), stores, elog)

    source = RulesSource(stores.pg, "", ttl_s=3600)
    rl = RateLimiter(stores.redis, source)
    assert (await rl.hit("login", "ip:10.1.1.1")).limit == DEFAULT_RULES["login"].limit

    result = await pipeline.process(records)
    assert result.dead_letters == 2 and result.applied == 1
    # cached: the new rule shows after forget_rules (what the admin PUT does once applied)
    assert (await rl.rule("login")).limit == DEFAULT_RULES["login"].limit
    rl.forget_rules()
    assert await rl.rule("login") == Rule("login", 2, 60)


def test_bad_env_setting_fails_at_start() -> None:
    with pytest.raises(ValueError, match="login=1"):
        RulesSource(None, "login=1")
