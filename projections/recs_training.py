"""Training the recommender in the background, and the model files every API process loads.

The ``interactions`` projector's background step. Every ``CHECK_S`` it asks how many
interactions changed since the newest model's data. It trains the first model once the
stream pauses, then again after ``recs_retrain_changes`` changes or after
``recs_retrain_s`` with any change, never twice within ``MIN_INTERVAL_S`` (unless the
data doubled since, as during a bulk load: then after ``GROWTH_INTERVAL_S``). One
trainer runs at a time across processes (an advisory lock). Training reads the whole
projection, weighs it (domain/recs/signals.py), fits in a worker thread (numpy and scipy
release the GIL, so the event loop keeps serving), writes the artefact to a file, then
records it in ``rec_models``. API processes load the newest row and swap it in between
requests (projections/recs_engine.py): no request ever sees half a model.

Fold-in needs none of this: the models score a user's *current* facts at request time,
so a play or a "not interested" counts within the projector's lag; retraining refreshes
the item-item relations everybody shares.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from psycopg_pool import AsyncConnectionPool

from core.backoff import pause
from core.ids import utcnow
from domain.recs import signals
from domain.recs.models import Recommender, fit
from projections.base import fetch_rows

log = logging.getLogger("mgw.recs.training")

CHECK_S = 5.0
#: seconds without a change before the first model trains
QUIET_S = 3.0
#: the least time between two trainings (each takes a core for a while)
MIN_INTERVAL_S = 300.0
#: ... unless the data doubled since the last model, then this much
GROWTH_INTERVAL_S = 30.0
KEEP_FILES = 3
#: advisory lock key: one trainer at a time (any stable 64-bit number)
LOCK_KEY = 0x5EC5_7A11
POPULARITY_HALF_LIFE_DAYS = 30.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class TrainingData:
    users: list[str]
    items: list[str]
    matrix: sp.csr_matrix  # users x items, signed weights
    popularity: np.ndarray  # per item: recent positive weight (float32)
    until: datetime | None  # newest updated_at read
    #: region -> per item recent positive weight of the users whose services are there
    regional: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Artefact:
    version: str
    items: list[str]
    model: Recommender
    popularity: np.ndarray
    trained_at: datetime
    regional: dict[str, np.ndarray] = field(default_factory=dict)


def facts_of(row: tuple[Any, ...]) -> signals.Facts:
    """A rec_interactions row from (finished ... more_like_this) on."""
    return signals.Facts(*row)


FACT_COLUMNS = (
    "finished, started, rating, watchlisted, clicks, impressions, not_interested, more_like_this"
)


async def read_training_data(pool: AsyncConnectionPool, now: datetime) -> TrainingData:
    async with pool.connection() as conn:
        cur = conn.cursor(binary=True)
        await cur.execute(
            f"SELECT user_id, content_id, {FACT_COLUMNS}, last_at, updated_at FROM rec_interactions"
        )
        rows = await cur.fetchall()
        regions = await fetch_rows(
            conn,
            "SELECT user_id, value->>'region' FROM library_items"
            " WHERE entity = 'services' AND NOT deleted AND value ? 'region'",
        )
    return build_matrix(rows, now, {u: r for u, r in regions if r})


async def read_item_features(pool: AsyncConnectionPool, items: list[str]) -> sp.csr_matrix:
    """Titles x (genres, people) one-hot, for the content model and cold titles."""
    async with pool.connection() as conn:
        rows = await fetch_rows(
            conn,
            "SELECT content_id, genres, people FROM search_docs WHERE content_id = ANY(%s)",
            (items,),
        )
    index = {c: i for i, c in enumerate(items)}
    names: dict[str, int] = {}
    r_idx: list[int] = []
    c_idx: list[int] = []
    for cid, genres, people in rows:
        i = index[cid]
        for f in [f"g:{g}" for g in genres or ()] + [f"p:{p}" for p in (people or ())[:10]]:
            r_idx.append(i)
            c_idx.append(names.setdefault(f, len(names)))
    return sp.csr_matrix(
        (np.ones(len(r_idx), np.float32), (np.asarray(r_idx, int), np.asarray(c_idx, int))),
        shape=(len(items), max(len(names), 1)),
    )


def build_matrix(
    rows: list[tuple[Any, ...]], now: datetime, regions: dict[str, str] | None = None
) -> TrainingData:
    """The signed user x title matrix, and recent popularity overall and per region (a
    user counts in the region of their services)."""
    regions = regions or {}
    users: dict[str, int] = {}
    items: dict[str, int] = {}
    r_idx: list[int] = []
    c_idx: list[int] = []
    vals: list[float] = []
    pop: dict[int, float] = {}
    by_region: dict[str, dict[int, float]] = {}
    until: datetime | None = None
    for row in rows:
        user, title, *facts, last_at, updated_at = row
        w = signals.weight(signals.Facts(*facts), last_at, now)
        if until is None or updated_at > until:
            until = updated_at
        if w == 0.0:
            continue
        u = users.setdefault(user, len(users))
        i = items.setdefault(title, len(items))
        r_idx.append(u)
        c_idx.append(i)
        vals.append(w)
        if w > 0:
            age = max((now - last_at).total_seconds(), 0.0) / 86400.0
            recent = 0.5 ** (age / POPULARITY_HALF_LIFE_DAYS)
            pop[i] = pop.get(i, 0.0) + recent
            region = regions.get(user)
            if region is not None:
                counts = by_region.setdefault(region, {})
                counts[i] = counts.get(i, 0.0) + recent
    matrix = sp.csr_matrix(
        (np.asarray(vals, np.float32), (np.asarray(r_idx), np.asarray(c_idx))),
        shape=(len(users), len(items)),
        dtype=np.float32,
    )
    popularity = np.zeros(len(items), np.float32)
    for i, v in pop.items():
        popularity[i] = v
    regional = {}
    for region, counts in by_region.items():
        arr = np.zeros(len(items), np.float32)
        for i, v in counts.items():
            arr[i] = v
        regional[region] = arr
    return TrainingData(list(users), list(items), matrix, popularity, until, regional)


def save(path: Path, art: Artefact) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(
        buf,
        model=np.frombuffer(art.model.to_bytes(), np.uint8),
        items=np.asarray(art.items, dtype=str),
        popularity=art.popularity,
        regions=np.asarray(sorted(art.regional), dtype=str),
        regional=np.stack([art.regional[r] for r in sorted(art.regional)])
        if art.regional
        else np.zeros((0, len(art.items)), np.float32),
        meta=np.asarray(
            json.dumps({"version": art.version, "trained_at": art.trained_at.isoformat()})
        ),
    )
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)  # readers see the old file or the whole new one


def load(path: Path) -> Artefact:
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        return Artefact(
            version=meta["version"],
            items=[str(x) for x in z["items"]],
            model=Recommender.from_bytes(z["model"].tobytes()),
            popularity=z["popularity"].astype(np.float32),
            trained_at=datetime.fromisoformat(meta["trained_at"]),
            regional=(
                {str(r): z["regional"][n] for n, r in enumerate(z["regions"])}
                if "regions" in z.files
                else {}
            ),
        )


async def train_once(pool: AsyncConnectionPool, directory: Path) -> str | None:
    """Train on the whole projection now; the new version, or None when there is no data."""
    now = utcnow()
    t0 = time.perf_counter()
    data = await read_training_data(pool, now)
    if data.matrix.nnz == 0:
        return None
    features = await read_item_features(pool, data.items)
    model = await asyncio.to_thread(fit, data.matrix, None, features)
    fit_s = time.perf_counter() - t0
    version = f"{model.version_tag}@{now.strftime('%Y%m%dT%H%M%SZ')}"
    art = Artefact(version, data.items, model, data.popularity, now, data.regional)
    stamp = now.strftime("%Y%m%dT%H%M%S%fZ")
    path = directory / f"model-{stamp}.npz"
    await asyncio.to_thread(save, path, art)
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO rec_models (version, path, trained_at, data_until, users, items,"
            " interactions, fit_s, description) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT (version) DO NOTHING",
            (
                version,
                str(path.resolve()),
                now,
                data.until,
                len(data.users),
                len(data.items),
                data.matrix.nnz,
                fit_s,
                json.dumps({"model": model.version_tag}),
            ),
        )
    _prune(directory, keep=path)
    log.info(
        "recommender %s trained on %d interactions (%d users, %d titles) in %.1f s",
        version, data.matrix.nnz, len(data.users), len(data.items), fit_s,
    )  # fmt: skip
    return version


def _prune(directory: Path, keep: Path) -> None:
    """Keep the newest few files: an API process may still be loading the one before."""
    files = sorted(directory.glob("model-*.npz"))
    for old in files[:-KEEP_FILES]:
        if old != keep:
            old.unlink(missing_ok=True)


class Trainer:
    """The background step: retrain when enough changed (see the module docstring)."""

    def __init__(self, pool: AsyncConnectionPool, settings: Any) -> None:
        self.pool = pool
        self.settings = settings
        self.directory: Path = settings.recs_path

    async def due(self) -> bool:
        async with self.pool.connection() as conn:
            latest = await fetch_rows(
                conn,
                "SELECT trained_at, data_until, interactions FROM rec_models"
                " ORDER BY trained_at DESC LIMIT 1",
            )
            since = EPOCH if not latest or latest[0][1] is None else latest[0][1]
            rows = await fetch_rows(
                conn,
                "SELECT count(*), max(updated_at) FROM rec_interactions WHERE updated_at > %s",
                (since,),
            )
        changed, newest = rows[0]
        if changed == 0:
            return False
        now = utcnow()
        if not latest:
            # the first model waits for a pause in the stream (a bulk load, a replay), so
            # it is trained once on all of it rather than on each first few thousand
            quiet = (now - newest).total_seconds() >= QUIET_S
            return bool(quiet or changed >= 10 * self.settings.recs_retrain_changes)
        age = (now - latest[0][0]).total_seconds()
        if changed >= latest[0][2] and age >= GROWTH_INTERVAL_S:
            return True  # the data doubled (a bulk load went on): the model is stale now
        if age < min(MIN_INTERVAL_S, self.settings.recs_retrain_s):
            return False
        return bool(
            changed >= self.settings.recs_retrain_changes or age >= self.settings.recs_retrain_s
        )

    async def step(self) -> str | None:
        """Train if due and no other process is training; the new version or None."""
        async with self.pool.connection() as conn:
            (got,) = (await fetch_rows(conn, "SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,)))[0]
            await conn.commit()  # the lock is the session's; no transaction stays open
            if not got:
                return None
            try:
                if not await self.due():
                    return None
                return await train_once(self.pool, self.directory)
            finally:
                await conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
                await conn.commit()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.step()
            except Exception:  # the next check tries again with what is there then
                log.exception("recommender training failed; retrying in %.0f s", CHECK_S)
            await pause(CHECK_S, stop)
