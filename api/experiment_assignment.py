"""Assigning users to the running experiment of a surface, for the routes that serve it.

``assign(ctx, user_id, surface)`` answers the caller's variant (GrowthBook hashing v2,
domain/experiments/assignment.py) of the experiment running on ``surface``, or None.
The running set is cached per process for ``CACHE_TTL_S``; a store slower than
``ASSIGN_BUDGET_S`` serves no experiment rather than a slow answer. The first serve per
(user, experiment) appends ``ExperimentExposed`` after the response: Redis ``SET NX``
keeps repeats off the log, and the projection keeps the first exposure. Defining,
starting, stopping and results are api/experiments.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from psycopg_pool import AsyncConnectionPool

from api.context import AppContext
from core.events import Event
from core.ids import utcnow
from domain.experiments.assignment import variant_index
from projections.experiments import Experiment, running_experiments

log = logging.getLogger("mgw.experiments")

#: how long ``assign`` may wait for the experiments store before serving no experiment
ASSIGN_BUDGET_S = 0.05
#: how old the in-process set of running experiments may be
CACHE_TTL_S = 1.0
#: how long Redis remembers that a user's exposure was appended (the projection keeps
#: the first exposure forever; this only saves appending repeats)
EXPOSURE_MEMORY_S = 90 * 24 * 3600
#: how long a claim to append an exposure holds before the append confirms it
EXPOSURE_CLAIM_S = 60


@dataclass(frozen=True, slots=True)
class Assignment:
    """The variant a user is served: its ``params`` tell the serving code what to do."""

    experiment: str
    variant: str
    params: dict[str, Any]


# -- background work: exposures are appended after the response ----------------------

_BACKGROUND: set[asyncio.Task[Any]] = set()


def _finished(task: asyncio.Task[Any]) -> None:
    _BACKGROUND.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("experiments background work failed: %r", exc, exc_info=exc)


def _spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """Run ``coro`` without waiting; keep a reference, and log its failure."""
    task = asyncio.create_task(coro)
    _BACKGROUND.add(task)
    task.add_done_callback(_finished)
    return task


async def drain_background() -> None:
    """Wait for the exposures in flight (shutdown, tests)."""
    while _BACKGROUND:
        await asyncio.gather(*list(_BACKGROUND), return_exceptions=True)


# -- the running experiments, cached per process ----------------------------------------


@dataclass(slots=True)
class _Running:
    loaded_at: float = 0.0
    by_surface: dict[str, Experiment] | None = None
    loading: asyncio.Task[dict[str, Experiment]] | None = field(default=None)


# One entry per database pool (several apps can share a process, tests do).
_CACHE: weakref.WeakKeyDictionary[AsyncConnectionPool, _Running] = weakref.WeakKeyDictionary()


async def _load(pg: AsyncConnectionPool, entry: _Running) -> dict[str, Experiment]:
    try:
        started = time.monotonic()
        async with pg.connection() as conn:
            found = await running_experiments(conn)
        by_surface: dict[str, Experiment] = {}
        for exp in found:  # earliest started first: it serves its surface
            by_surface.setdefault(exp.surface, exp)
        entry.by_surface, entry.loaded_at = by_surface, started
        return by_surface
    finally:
        entry.loading = None


def _load_failed(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("loading the running experiments failed: %r", exc)


async def _running(pg: AsyncConnectionPool) -> dict[str, Experiment]:
    """Running experiments by surface, at most ``CACHE_TTL_S`` old; while a refresh
    runs, callers keep the previous answer. The load runs as its own task, so a caller
    that gives up waiting does not cancel it: the next call finds it done."""
    entry = _CACHE.get(pg)
    if entry is None:
        entry = _CACHE[pg] = _Running()
    fresh = time.monotonic() - entry.loaded_at < CACHE_TTL_S
    if entry.by_surface is not None and fresh:
        return entry.by_surface
    if entry.loading is None:
        entry.loading = asyncio.create_task(_load(pg, entry))
        entry.loading.add_done_callback(_load_failed)
    if entry.by_surface is not None:
        return entry.by_surface
    return await asyncio.shield(entry.loading)


def forget_running(pg: AsyncConnectionPool) -> None:
    """Drop this process's cached running set (after a start or stop it saw applied)."""
    _CACHE.pop(pg, None)


async def _expose(c: AppContext, exp: Experiment, variant: str, user_id: str) -> None:
    """Append the user's first exposure; Redis ``SET NX`` keeps repeats off the log."""
    redis = c.stores.redis
    memo = f"mgw:experiments:exposed:{exp.key}:{user_id}"
    if redis is not None:
        try:
            # a short claim first, made long once the event is on the log: a process
            # that dies in between leaves a claim that expires, not a lost exposure
            if not await redis.set(memo, variant, nx=True, ex=EXPOSURE_CLAIM_S):
                return  # appended (or being appended): the projection keeps the first
        except Exception as exc:  # dedupe is an optimisation; the projection keeps one
            log.warning("exposure dedupe unavailable (Redis), appending anyway: %r", exc)
            redis = None
    now = utcnow()
    event = Event(
        "ExperimentExposed",
        user_id,
        {
            "experiment": exp.key,
            "user_id": user_id,
            "variant": variant,
            "version": exp.version,
            "surface": exp.surface,
            "at": now,
        },
        occurred_at=now,
        producer="api",
    )
    try:
        await c.publisher.publish(event)
    except BaseException:
        if redis is not None:  # not appended: let the next serve try again
            try:
                await redis.delete(memo)
            except Exception as exc:
                log.warning("could not forget exposure memo %s: %r", memo, exc)
        raise
    if redis is not None:
        try:
            await redis.expire(memo, EXPOSURE_MEMORY_S)
        except Exception as exc:  # the claim expires; a later serve appends a repeat
            log.warning("could not keep exposure memo %s: %r", memo, exc)


async def assign(ctx: AppContext, user_id: str, surface: str) -> Assignment | None:
    """The variant of the experiment running on ``surface`` that ``user_id`` is served,
    or None when none runs there. Deterministic (GrowthBook hashing v2 of the
    experiment's seed and the user id). The first serve per (user, experiment) appends
    ``ExperimentExposed`` in the background. Never raises for a slow or failing
    experiments store: after ``ASSIGN_BUDGET_S`` it logs and answers None."""
    try:
        running = await asyncio.wait_for(_running(ctx.stores.pg), ASSIGN_BUDGET_S)
    except TimeoutError:
        log.warning(
            "experiments store slower than %.0f ms: %s served without an experiment",
            ASSIGN_BUDGET_S * 1000,
            surface,
        )
        return None
    except Exception as exc:
        log.warning("experiments store failed, %s served without an experiment: %r", surface, exc)
        return None
    exp = running.get(surface)
    if exp is None:
        return None
    chosen = exp.variants[variant_index(exp.seed, user_id, [v.weight for v in exp.variants])]
    _spawn(_expose(ctx, exp, chosen.name, user_id))
    return Assignment(exp.key, chosen.name, dict(chosen.params))
