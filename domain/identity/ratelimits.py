"""Rate-limit rules: what each guarded action allows, and how the rules are overridden.

A rule allows ``limit`` requests per ``period_s`` seconds for one subject (a client
address, an account). The API enforces them with GCRA in Redis (api/ratelimit.py); here
are the pure parts: the rule type, the defaults, the ``MGW_RATE_LIMITS`` syntax and the
bounds every rule must respect.

Three layers, later ones winning per rule name:

* ``DEFAULT_RULES``, below;
* ``MGW_RATE_LIMITS``, ``"login=10/60,register=5/3600"`` (an operator's setting);
* rules an admin set through the API (``RateLimitRuleSet`` events, folded by
  projections/identity/rate_limits.py).

The defaults are for one human at a keyboard: a few mistakes are fine, a script is not.
Guessing-sized secrets (a 4-6 digit PIN, a 6 digit TOTP code) get the tightest rules.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

RULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
LIMIT_MIN, LIMIT_MAX = 1, 1_000_000
PERIOD_MIN_S, PERIOD_MAX_S = 1, 86_400

#: where an effective rule came from
SOURCE_DEFAULT, SOURCE_ENV, SOURCE_ADMIN = "default", "env", "admin"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    limit: int
    period_s: int

    def spec(self) -> str:
        """The ``MGW_RATE_LIMITS`` form, ``login=10/60``."""
        return f"{self.name}={self.limit}/{self.period_s}"


@dataclass(frozen=True, slots=True)
class EffectiveRule:
    rule: Rule
    source: str  # SOURCE_DEFAULT | SOURCE_ENV | SOURCE_ADMIN


def validate_rule(name: str, limit: int, period_s: int) -> Rule:
    """The rule, or ``ValueError`` naming what is wrong (``name``, ``limit``, ``period_s``)."""
    if not isinstance(name, str) or not RULE_NAME.match(name):
        raise ValueError(
            f"name: {name!r} is not a rule name (a-z, 0-9 and '_', starting with a letter,"
            " at most 32 characters)"
        )
    # bool is an int in Python; True/False as a limit is a caller's mistake
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ValueError(f"limit: must be an integer, got {limit!r}")
    if not LIMIT_MIN <= limit <= LIMIT_MAX:
        raise ValueError(f"limit: must be between {LIMIT_MIN} and {LIMIT_MAX}, got {limit}")
    if isinstance(period_s, bool) or not isinstance(period_s, int):
        raise ValueError(f"period_s: must be an integer, got {period_s!r}")
    if not PERIOD_MIN_S <= period_s <= PERIOD_MAX_S:
        raise ValueError(
            f"period_s: must be between {PERIOD_MIN_S} and {PERIOD_MAX_S} seconds, got {period_s}"
        )
    return Rule(name, limit, period_s)


def _rules(*specs: tuple[str, int, int]) -> dict[str, Rule]:
    return {name: validate_rule(name, limit, period) for name, limit, period in specs}


#: Each rule is applied per subject: the client address and, where the request names
#: one, the account (``login``, ``password_reset``, ``mfa``, ``device``).
DEFAULT_RULES: dict[str, Rule] = _rules(
    # password sign-in (token endpoint's password grant, password change): per address
    # and per account, so one address cannot spray many accounts nor many addresses one
    ("login", 10, 60),
    # new accounts per address
    ("register", 5, 3600),
    # the OAuth token endpoint's other grants (refresh, code, device polling): apps
    # refresh often, but not 60 times a minute from one address
    ("token", 60, 60),
    # reset mails per address and per account: each one sends a mail
    ("password_reset", 5, 3600),
    # TOTP and backup codes: 10 tries in 5 minutes against a 10^6 code space
    ("mfa", 10, 300),
    # parental PINs: 4-6 digits, so the tightest rule
    ("pin", 5, 900),
    # device authorization: starting a flow and approving a user code (RFC 8628 codes
    # carry ~34 bits; this bounds typing guesses)
    ("device", 30, 60),
    # title reports per address and per account: each one lands in a human's queue
    ("report", 10, 3600),
)


def parse_overrides(text: str) -> dict[str, Rule]:
    """``"login=10/60,register=5/3600"`` → rules by name.

    Blank text means no overrides; spaces around items and parts are ignored, as is a
    trailing comma. A rule named twice is an error (which one was meant?). Raises
    ``ValueError`` whose message names the offending item.
    """
    rules: dict[str, Rule] = {}
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name, eq, rest = item.partition("=")
        limit_s, slash, period_s = rest.partition("/")
        name, limit_s, period_s = name.strip(), limit_s.strip(), period_s.strip()
        if not eq or not slash or not name:
            raise ValueError(f"rate limit {item!r}: write it as name=limit/period_seconds")
        if not (limit_s.isascii() and limit_s.isdigit()):
            raise ValueError(f"rate limit {item!r}: limit {limit_s!r} is not a whole number")
        if not (period_s.isascii() and period_s.isdigit()):
            raise ValueError(
                f"rate limit {item!r}: period {period_s!r} is not a whole number of seconds"
            )
        if name in rules:
            raise ValueError(f"rate limit {item!r}: {name!r} is set twice")
        try:
            # digits only (checked above), so int() cannot see signs, '_' or huge exponents;
            # cap the length so int() of a megabyte of digits is not a CPU sink
            if len(limit_s) > 12 or len(period_s) > 12:
                raise ValueError("limit: number too large")
            rules[name] = validate_rule(name, int(limit_s), int(period_s))
        except ValueError as exc:
            raise ValueError(f"rate limit {item!r}: {exc}") from None
    return rules


def effective_rules(
    env: Mapping[str, Rule] | None = None,
    admin: Mapping[str, Rule] | None = None,
    defaults: Mapping[str, Rule] = DEFAULT_RULES,
) -> dict[str, EffectiveRule]:
    """Defaults ← env overrides ← admin rules, per name, each tagged with its source.
    Sorted by name so listings are stable."""
    merged: dict[str, EffectiveRule] = {}
    for source, layer in ((SOURCE_DEFAULT, defaults), (SOURCE_ENV, env), (SOURCE_ADMIN, admin)):
        for name, rule in (layer or {}).items():
            merged[name] = EffectiveRule(rule, source)
    return dict(sorted(merged.items()))
