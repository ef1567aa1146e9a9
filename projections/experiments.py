"""Experiments read model: definitions by version, status, and first exposures.

Definitions, starts and stops are keyed by experiment key, so one experiment's story is
folded in log order in one partition; every rule below looks at that one experiment
only, so a replay decides it the same way:

* the first ExperimentSet with a given (key, version) wins (ON CONFLICT DO NOTHING);
  the row keeps the winner's event id, which is how the API tells a writer that lost;
* a version that would change a started experiment's allocation (surface, seed,
  variants) is not stored: moving users between variants mid-flight breaks the
  statistics (the API refuses it with 409 first);
* draft -> running -> stopped; a start of a running or stopped experiment, a stop of a
  stopped one, and either for an undefined key change nothing.

Exposures are keyed by user id: one user's exposures are in one partition, and the
first per (experiment, user) is kept. Whether experiments run on the same surface at
once is the API's rule (it refuses a second start); should two run anyway, the serving
side takes the one started first (``running_experiments``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from core.topics import EXPERIMENTS
from domain.experiments.definition import (
    EXPERIMENT_KEY,
    METRICS,
    DefinitionError,
    Variant,
    check_variants,
)
from domain.experiments.results import VariantCounts
from projections.base import Envelope, PostgresOnly, RejectedEvent, fetch_rows

log = logging.getLogger("mgw.experiments")
_TYPES = frozenset(EXPERIMENTS.event_types)


def _variants_of(payload: dict[str, Any]) -> list[Variant]:
    out = []
    for v in payload["variants"]:
        params = json.loads(v["params"])
        if not isinstance(params, dict):
            raise ValueError("params must be a JSON object")
        out.append(Variant(v["name"], v["weight"], params))
    return out


def _allocation(surface: str, seed: str, variants: Any) -> tuple[Any, ...]:
    """What may not change while running, comparable across JSON and event shapes."""
    items = json.loads(variants) if isinstance(variants, str) else variants
    return (
        surface,
        seed,
        tuple(
            (
                v["name"],
                v["weight"],
                json.dumps(
                    json.loads(v["params"]) if isinstance(v["params"], str) else v["params"],
                    sort_keys=True,
                ),
            )
            for v in items
        ),
    )


def _no_nul(*texts: str | None) -> None:
    for t in texts:
        if t is not None and "\x00" in t:
            raise RejectedEvent("text must not contain NUL characters")


class ExperimentsProjector(PostgresOnly):
    name = "experiments"
    topics: tuple[str, ...] = (EXPERIMENTS.name,)
    tables: tuple[str, ...] = ("experiment_versions", "experiments", "experiment_exposures")

    def check(self, event: Envelope) -> None:
        if event.event_type not in _TYPES:
            raise RejectedEvent(f"experiments do not handle {event.event_type}")
        p = event.payload
        if event.event_type == "ExperimentExposed":
            if event.key != p["user_id"]:
                raise RejectedEvent("record key must be the user id")
            _no_nul(p["experiment"], p["user_id"], p["variant"], p["surface"])
            if not p["user_id"] or not p["variant"]:
                raise RejectedEvent("user_id, variant: must be non-empty")
            return
        if not EXPERIMENT_KEY.match(p["key"]):
            raise RejectedEvent(f"key: {p['key']!r} is not an experiment key")
        if event.key != p["key"]:
            raise RejectedEvent("record key must be the experiment key")
        if event.event_type != "ExperimentSet":
            _no_nul(p.get("reason"), p.get("started_by"), p.get("stopped_by"))
            return
        if p["version"] < 1:
            raise RejectedEvent("version: must be 1 or more")
        # Structure only, plus what serving relies on (names, positive weights, JSON
        # object params); metric names are kept as written, read through METRICS.
        try:
            check_variants(_variants_of(p))
        except DefinitionError as exc:
            raise RejectedEvent(f"{exc.field}: {exc}") from None
        except ValueError as exc:
            raise RejectedEvent(f"variants: params must be a JSON object ({exc})") from None
        _no_nul(p["surface"], p["seed"], p["description"], p["set_by"], p["primary_metric"])

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> None:
        ordered = sorted(batch, key=lambda e: (e.partition, e.offset))
        exposures: dict[tuple[str, str], tuple[Any, ...]] = {}
        for e in ordered:
            p = e.payload
            if e.event_type == "ExperimentExposed":
                # first in log order wins, within the batch and (ON CONFLICT) across batches
                exposures.setdefault(
                    (p["experiment"], p["user_id"]),
                    (p["experiment"], p["user_id"], p["variant"], p["version"], p["at"]),
                )
            elif e.event_type == "ExperimentSet":
                await self._set(conn, e)
            elif e.event_type == "ExperimentStarted":
                await conn.execute(
                    "UPDATE experiments SET status = 'running', started_at = %s"
                    " WHERE key = %s AND status = 'draft'",
                    (e.happened_at, p["key"]),
                )
            else:
                await conn.execute(
                    "UPDATE experiments SET status = 'stopped', stopped_at = %s,"
                    " stop_reason = %s, stopped_by = %s"
                    " WHERE key = %s AND status <> 'stopped'",
                    (e.happened_at, p["reason"], p["stopped_by"], p["key"]),
                )
        if exposures:
            cols = list(zip(*exposures.values(), strict=True))
            await conn.execute(
                "INSERT INTO experiment_exposures (experiment, user_id, variant, version, at)"
                " SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::int[],"
                " %s::timestamptz[]) ON CONFLICT DO NOTHING",
                [list(c) for c in cols],
            )

    async def _set(self, conn: AsyncConnection[Any], e: Envelope) -> None:
        p = e.payload
        rows = await fetch_rows(
            conn,
            "SELECT x.status, v.surface, v.seed, v.variants FROM experiments x"
            " JOIN experiment_versions v ON v.key = x.key AND v.version = x.version"
            " WHERE x.key = %s",
            (p["key"],),
        )
        if rows and rows[0][0] != "draft":
            _, surface, seed, variants = rows[0]
            if _allocation(surface, seed, variants) != _allocation(
                p["surface"], p["seed"], p["variants"]
            ):
                log.warning(
                    "experiment %s version %s ignored: it changes the allocation of a"
                    " started experiment",
                    p["key"],
                    p["version"],
                )
                return
        variants = [
            {"name": v["name"], "weight": v["weight"], "params": json.loads(v["params"])}
            for v in p["variants"]
        ]
        cur = await conn.execute(
            "INSERT INTO experiment_versions (key, version, surface, variants,"
            " primary_metric, guardrail_metrics, seed, description, set_by, set_at, event_id)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (key, version) DO NOTHING",
            (
                p["key"], p["version"], p["surface"], Jsonb(variants), p["primary_metric"],
                list(p["guardrail_metrics"]), p["seed"], p["description"], p["set_by"],
                e.happened_at, e.event_id,
            ),
        )  # fmt: skip
        if cur.rowcount != 1:
            return  # a concurrent writer's version with this number came first
        await conn.execute(
            "INSERT INTO experiments (key, version, surface, created_at)"
            " VALUES (%s, %s, %s, %s)"
            " ON CONFLICT (key) DO UPDATE SET version = excluded.version,"
            " surface = excluded.surface WHERE experiments.version < excluded.version",
            (p["key"], p["version"], p["surface"], e.happened_at),
        )


# -- queries -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Experiment:
    key: str
    version: int
    status: str
    surface: str
    variants: list[Variant]
    primary_metric: str
    guardrail_metrics: list[str]
    seed: str
    description: str
    set_by: str | None
    set_at: datetime
    created_at: datetime
    started_at: datetime | None
    stopped_at: datetime | None
    stop_reason: str | None
    event_id: str | None

    def as_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {
            "key": self.key,
            "version": self.version,
            "status": self.status,
            "surface": self.surface,
            "variants": [
                {"name": v.name, "weight": v.weight, "params": dict(v.params)}
                for v in self.variants
            ],
            # names another code version wrote and this one does not compute are dropped
            "primary_metric": self.primary_metric if self.primary_metric in METRICS else None,
            "guardrail_metrics": [m for m in self.guardrail_metrics if m in METRICS],
            "seed": self.seed,
            "description": self.description,
            "set_by": self.set_by,
            "set_at": iso(self.set_at),
            "created_at": iso(self.created_at),
            "started_at": iso(self.started_at),
            "stopped_at": iso(self.stopped_at),
            "stop_reason": self.stop_reason,
        }


_COLUMNS = (
    "x.key, v.version, x.status, v.surface, v.variants, v.primary_metric,"
    " v.guardrail_metrics, v.seed, v.description, v.set_by, v.set_at, x.created_at,"
    " x.started_at, x.stopped_at, x.stop_reason, v.event_id"
)
_FROM = " FROM experiments x JOIN experiment_versions v ON v.key = x.key"


def _experiment(row: Sequence[Any]) -> Experiment:
    raw = json.loads(row[4]) if isinstance(row[4], str) else row[4]
    variants = [Variant(v["name"], int(v["weight"]), dict(v["params"])) for v in raw]
    return Experiment(row[0], row[1], row[2], row[3], variants, row[5], list(row[6]), *row[7:])


async def get_experiment(conn: AsyncConnection[Any], key: str) -> Experiment | None:
    """The experiment with its current definition."""
    rows = await fetch_rows(
        conn, f"SELECT {_COLUMNS}{_FROM} AND v.version = x.version WHERE x.key = %s", (key,)
    )
    return _experiment(rows[0]) if rows else None


async def stored_version(conn: AsyncConnection[Any], key: str, version: int) -> str | None:
    """The event id that set ``version`` of ``key``; None when no such version is stored."""
    rows = await fetch_rows(
        conn,
        "SELECT coalesce(event_id, '') FROM experiment_versions WHERE key = %s AND version = %s",
        (key, version),
    )
    return rows[0][0] if rows else None


async def list_experiments(
    conn: AsyncConnection[Any], *, limit: int, after: str | None, status: str | None
) -> list[Experiment]:
    """Experiments by key (after ``after``), each with its current definition."""
    rows = await fetch_rows(
        conn,
        f"SELECT {_COLUMNS}{_FROM} AND v.version = x.version"
        " WHERE (%s::text IS NULL OR x.key > %s) AND (%s::text IS NULL OR x.status = %s)"
        " ORDER BY x.key LIMIT %s",
        (after, after, status, status, limit),
    )
    return [_experiment(r) for r in rows]


async def running_experiments(conn: AsyncConnection[Any]) -> list[Experiment]:
    """Running experiments, the earliest started first (per surface, the first serves)."""
    rows = await fetch_rows(
        conn,
        f"SELECT {_COLUMNS}{_FROM} AND v.version = x.version WHERE x.status = 'running'"
        " ORDER BY x.started_at, x.key",
    )
    return [_experiment(r) for r in rows]


async def exposed_variant(conn: AsyncConnection[Any], key: str, user_id: str) -> str | None:
    rows = await fetch_rows(
        conn,
        "SELECT variant FROM experiment_exposures WHERE experiment = %s AND user_id = %s",
        (key, user_id),
    )
    return rows[0][0] if rows else None


async def variant_counts(conn: AsyncConnection[Any], exp: Experiment) -> list[VariantCounts]:
    """What each variant's exposed users did at or after their exposure (and, once the
    experiment stopped, not after it): impressions and clicks on the experiment's
    surface, play starts and completions anywhere. Variants in definition order; a
    variant no longer defined is left out."""
    rows = await fetch_rows(
        conn,
        "SELECT variant, count(*), sum(imp), sum(clk), sum(imp * imp), sum(clk * clk),"
        " sum(imp * clk), count(*) FILTER (WHERE plays > 0),"
        " count(*) FILTER (WHERE completions > 0)"
        " FROM (SELECT x.variant, x.user_id,"
        "   count(a.*) FILTER (WHERE a.kind = 'impression' AND a.surface = %(surface)s) AS imp,"
        "   count(a.*) FILTER (WHERE a.kind = 'click' AND a.surface = %(surface)s) AS clk,"
        "   count(a.*) FILTER (WHERE a.kind = 'play_start') AS plays,"
        "   count(a.*) FILTER (WHERE a.kind = 'completion') AS completions"
        "   FROM experiment_exposures x"
        "   LEFT JOIN activity_events a ON a.user_id = x.user_id AND a.at >= x.at"
        "     AND (%(until)s::timestamptz IS NULL OR a.at <= %(until)s)"
        "   WHERE x.experiment = %(key)s"
        "     AND (%(until)s::timestamptz IS NULL OR x.at <= %(until)s)"
        "   GROUP BY x.variant, x.user_id) per_user"
        " GROUP BY variant",
        {"surface": exp.surface, "until": exp.stopped_at, "key": exp.key},
    )
    by_name = {r[0]: [int(v or 0) for v in r[1:]] for r in rows}
    return [VariantCounts(v.name, v.weight, *by_name.get(v.name, [])) for v in exp.variants]
