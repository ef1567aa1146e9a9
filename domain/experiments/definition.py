"""What an experiment definition may hold, checked once for the API and the projector.

An experiment runs on one ``surface`` (where its variants are served), splits users
between at least two named variants by positive integer weights, and is read on a
primary metric and any guardrail metrics. The first variant is the control every other
variant is compared with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

EXPERIMENT_KEY = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
SURFACE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
#: metrics the results compute (docs/experiments.md defines them); all higher-is-better
METRICS: tuple[str, ...] = ("ctr", "play_start_rate", "completion_rate")
VARIANTS_MIN, VARIANTS_MAX = 2, 10
WEIGHT_MAX = 1_000_000
DESCRIPTION_MAX = 500
SEED_MAX = 128
PARAMS_MAX_CHARS = 4_000
STATUSES: tuple[str, ...] = ("draft", "running", "stopped")


class DefinitionError(ValueError):
    """A definition that cannot be stored; ``field`` names the part at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    weight: int
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Allocation:
    """What decides who gets which variant: it may not change while an experiment runs
    (moving users between variants mid-flight breaks the statistics)."""

    surface: str
    seed: str
    variants: tuple[tuple[str, int, str], ...]  # (name, weight, params as canonical JSON)


def check_variants(variants: Sequence[Variant]) -> None:
    if not VARIANTS_MIN <= len(variants) <= VARIANTS_MAX:
        raise DefinitionError(
            "variants", f"an experiment needs {VARIANTS_MIN} to {VARIANTS_MAX} variants"
        )
    seen: set[str] = set()
    for i, v in enumerate(variants):
        if not VARIANT_NAME.match(v.name):
            raise DefinitionError(
                f"variants.{i}.name",
                "variant names are 1-32 characters of a-z, 0-9, '_' and '-',"
                " starting with a letter or digit",
            )
        if v.name in seen:
            raise DefinitionError(f"variants.{i}.name", f"variant name {v.name!r} is repeated")
        seen.add(v.name)
        if isinstance(v.weight, bool) or not isinstance(v.weight, int):
            raise DefinitionError(f"variants.{i}.weight", "weight must be an integer")
        if not 0 < v.weight <= WEIGHT_MAX:
            raise DefinitionError(
                f"variants.{i}.weight", f"weight must be between 1 and {WEIGHT_MAX}"
            )


def check_metrics(primary: str, guardrails: Sequence[str]) -> None:
    known = ", ".join(METRICS)
    if primary not in METRICS:
        raise DefinitionError("primary_metric", f"unknown metric {primary!r} (known: {known})")
    for i, m in enumerate(guardrails):
        if m not in METRICS:
            raise DefinitionError(
                f"guardrail_metrics.{i}", f"unknown metric {m!r} (known: {known})"
            )
    if len(set(guardrails)) != len(guardrails):
        raise DefinitionError("guardrail_metrics", "a guardrail metric is repeated")
