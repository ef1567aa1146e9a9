"""The query side of the recommendations read model: score, filter, diversify, explain.

One ``RecsEngine`` per API process holds the newest trained model (projections/
recs_training.py) and a compact copy of the catalog (titles, genres, parental ratings,
offers, popularity from ``search_docs``), both refreshed in the background and swapped in
as whole objects, so a request works on one consistent pair from start to end.

A request reads the user's facts from ``rec_interactions`` (one indexed query) and scores
them with the shared item-item model: that is the fold-in. A play, a rating or a "not
interested" changes the answer as soon as the interactions projector has folded it, with
no retraining. Titles the model does not know (new ones) start from a small popularity
prior plus the user's per-user correction (domain/recs/serving.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from psycopg_pool import AsyncConnectionPool

from core.backoff import pause
from core.ids import utcnow
from domain.recs import serving, signals
from domain.recs.serving import Because
from projections.base import fetch_rows
from projections.recs_training import FACT_COLUMNS, Artefact, load

log = logging.getLogger("mgw.recs")

MODEL_CHECK_S = 2.0
#: plays' worth of everyone's popularity a region's own is blended with
REGION_PRIOR = 50.0
CATALOG_REFRESH_S = 10.0
#: a user's strongest facts that score a request: a few viewers have thousands, and past
#: a few hundred the weaker ones move the list little but cost time on every request
MAX_HISTORY = 400
#: candidates scored before filters and diversity pick the answer
POOL = 60


@dataclass(frozen=True, slots=True)
class Catalog:
    ids: list[str]
    index: dict[str, int]
    titles: list[str]
    kinds: list[str]
    years: list[int | None]
    ratings: list[str | None]
    offer_keys: list[frozenset[str]]
    features: sp.csr_matrix  # titles x genres, rows L2-normalised
    popularity: np.ndarray  # 0..1 (search_docs.popularity)
    loaded_at: datetime
    _allowed: dict[tuple[str | None, str], np.ndarray] = field(default_factory=dict)

    def allowed(self, limit: Any) -> np.ndarray | None:
        """Which titles a profile's parental limit admits (None: no limit), cached."""
        if limit is None or limit.max_rating is None:
            return None
        key = (limit.max_rating, limit.unrated_as)
        mask = self._allowed.get(key)
        if mask is None:
            mask = np.fromiter((limit.allows(r) for r in self.ratings), bool, len(self.ratings))
            self._allowed[key] = mask
        return mask


async def load_catalog(pool: AsyncConnectionPool) -> Catalog:
    async with pool.connection() as conn:
        rows = await fetch_rows(
            conn,
            "SELECT content_id, kind, title, year, genres, rating, offer_keys, popularity"
            " FROM search_docs WHERE kind <> 'episode' ORDER BY content_id",
        )
    return build_catalog(rows)


def build_catalog(rows: Sequence[tuple[Any, ...]]) -> Catalog:
    genre_ix: dict[str, int] = {}
    r_idx: list[int] = []
    c_idx: list[int] = []
    for i, row in enumerate(rows):
        for g in row[4] or ():
            r_idx.append(i)
            c_idx.append(genre_ix.setdefault(g, len(genre_ix)))
    feats = sp.csr_matrix(
        (np.ones(len(r_idx), np.float32), (np.asarray(r_idx, int), np.asarray(c_idx, int))),
        shape=(len(rows), max(len(genre_ix), 1)),
    )
    norms = np.sqrt(np.asarray(feats.multiply(feats).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    feats = sp.csr_matrix(sp.diags(1.0 / norms) @ feats, dtype=np.float32)
    ids = [r[0] for r in rows]
    return Catalog(
        ids=ids,
        index={c: i for i, c in enumerate(ids)},
        titles=[r[2] for r in rows],
        kinds=[r[1] for r in rows],
        years=[r[3] for r in rows],
        ratings=[r[5] for r in rows],
        offer_keys=[frozenset(r[6] or ()) for r in rows],
        features=feats,
        popularity=np.asarray([r[7] or 0.0 for r in rows], np.float32),
        loaded_at=utcnow(),
    )


@dataclass(frozen=True, slots=True)
class Served:
    """A model aligned with a catalog: index maps both ways (-1: not in the other)."""

    art: Artefact
    catalog: Catalog
    to_cat: np.ndarray  # model item -> catalog index
    model_ix: dict[str, int]
    popularity: np.ndarray  # per catalog title, recent plays from training, 0..1
    regional: dict[str, np.ndarray]  # the same per region, shrunk towards the whole

    @property
    def version(self) -> str:
        return self.art.version


def align(art: Artefact | None, catalog: Catalog) -> Served | None:
    if art is None:
        return None
    to_cat = np.asarray([catalog.index.get(c, -1) for c in art.items], dtype=np.int64)
    known = to_cat >= 0

    def on_catalog(per_item: np.ndarray) -> np.ndarray:
        pop = np.zeros(len(catalog.ids), np.float32)
        pop[to_cat[known]] = per_item[known]
        top = float(pop.max()) if pop.size else 0.0
        return np.log1p(pop) / np.log1p(top) if top > 0 else pop

    total = float(art.popularity.sum()) or 1.0
    share = art.popularity / total
    regional = {
        # a region with few viewers leans on the whole: REGION_PRIOR plays spread like
        # everyone's, plus its own
        r: on_catalog(counts + REGION_PRIOR * share)
        for r, counts in art.regional.items()
    }
    index = {c: i for i, c in enumerate(art.items)}
    return Served(art, catalog, to_cat, index, on_catalog(art.popularity), regional)


@dataclass(frozen=True, slots=True)
class UserFact:
    content_id: str
    facts: signals.Facts
    last_at: datetime


@dataclass(frozen=True, slots=True)
class Scored:
    """A user's scores over the catalog, with what explains them."""

    scores: np.ndarray
    x: sp.csr_matrix | None  # the user's row over the model's items
    facts: dict[str, UserFact]
    excluded: np.ndarray  # catalog indexes never to show
    parts: Any = None  # the model's raw scores per part, for explain


@dataclass(frozen=True, slots=True)
class View:
    """One catalog and the model aligned with it: a request works on one View from
    start to end, whatever the background swaps in meanwhile."""

    catalog: Catalog
    served: Served | None

    @property
    def version(self) -> str:
        return self.served.version if self.served is not None else "popularity"

    def score(
        self, facts: dict[str, UserFact], *, model: bool = True, region: str | None = None
    ) -> Scored:
        """The user's scores over the catalog; ``model`` False ranks by popularity (of
        ``region`` when the model knows it) and the user's correction alone."""
        catalog = self.catalog
        served = self.served if model else None
        now = utcnow()
        pop = catalog.popularity
        if self.served is not None:
            pop = self.served.regional.get(region or "", self.served.popularity)
        scores = serving.POPULARITY_PRIOR * pop
        x = None
        parts = None
        if served is not None and facts:
            cols, vals = [], []
            for cid, f in facts.items():
                j = served.model_ix.get(cid)
                if j is not None:
                    w = signals.weight(f.facts, f.last_at, now)
                    if w != 0.0:
                        cols.append(j)
                        vals.append(w)
            if len(cols) > MAX_HISTORY:
                keep = np.argsort(-np.abs(np.asarray(vals)), kind="stable")[:MAX_HISTORY]
                cols = [cols[i] for i in keep]
                vals = [vals[i] for i in keep]
            if cols:
                n = len(served.art.items)
                x = sp.csr_matrix(
                    (np.asarray(vals, np.float32), (np.zeros(len(cols), int), np.asarray(cols))),
                    shape=(1, n),
                )
                parts = served.art.model.score_parts(x)
                m = serving.normalised(np.asarray(served.art.model.score(x, parts=parts)).ravel())
                known = served.to_cat >= 0
                scores = scores.copy()
                scores[served.to_cat[known]] += m[known]
        explicit = [
            (catalog.index[c], signals.explicit(f.facts))
            for c, f in facts.items()
            if c in catalog.index and signals.explicit(f.facts) != 0.0
        ]
        vec = serving.correction_vector(
            catalog.features, [i for i, _ in explicit], [s for _, s in explicit]
        )
        if vec is not None:
            scores = scores + serving.correction_scores(catalog.features, vec)
        excluded = np.asarray(
            [catalog.index[c] for c, f in facts.items()
             if c in catalog.index and signals.excluded(f.facts)],
            dtype=np.int64,
        )  # fmt: skip
        return Scored(np.asarray(scores, np.float32), x, facts, excluded, parts)

    def pick(
        self,
        scored: Scored,
        *,
        limit: int,
        admit: Callable[[int], bool],
        allowed: np.ndarray | None,
        diversity: float = serving.DIVERSITY_LAMBDA,
        restrict: np.ndarray | None = None,
        skip: set[int] | None = None,
    ) -> list[int]:
        """The best ``limit`` catalog indexes that pass: not excluded, allowed by the
        parental mask, admitted by ``admit`` (services), within ``restrict`` when given;
        then diversified by MMR over a pool a few times larger."""
        catalog = self.catalog
        s = scored.scores.copy()
        s[scored.excluded] = -np.inf
        if allowed is not None:
            s[~allowed] = -np.inf
        if restrict is not None:
            keep = np.full(len(s), -np.inf, np.float32)
            keep[restrict] = 0.0
            s = s + keep
        want = max(limit * 3, POOL)
        top = min(len(s), max(8 * want, 2000))
        while True:
            part = np.argpartition(-s, top - 1)[:top] if top < len(s) else np.arange(len(s))
            pool = []
            for i in part[np.argsort(-s[part], kind="stable")]:
                if not np.isfinite(s[i]):
                    break
                if (skip is None or int(i) not in skip) and admit(int(i)):
                    pool.append(int(i))
                    if len(pool) >= want:
                        break
            if len(pool) >= want or top >= len(s):
                break
            top = len(s)  # filters left too few near the top: look at everything once
        if not pool:
            return []
        if diversity >= 1.0:
            return pool[:limit]
        return serving.mmr(pool, [float(s[i]) for i in pool], catalog.features, limit, diversity)

    def similar(self, i: int, k: int) -> list[tuple[int, float]]:
        """Catalog titles like catalog title ``i``, best first: the model's item-item
        neighbours, then (for titles the model does not know, or to fill up) titles
        sharing its genres, ordered by genre overlap and popularity."""
        catalog = self.catalog
        out: list[tuple[int, float]] = []
        seen = {i}
        served = self.served
        j = served.model_ix.get(catalog.ids[i]) if served is not None else None
        if served is not None and j is not None:
            for m, sim in served.art.model.similar(j, k):
                c = int(served.to_cat[m])
                if c >= 0 and c not in seen:
                    out.append((c, float(sim)))
                    seen.add(c)
        if len(out) < k:
            genre = np.asarray(catalog.features @ catalog.features[i].T.toarray()).ravel()
            fill = genre + serving.POPULARITY_PRIOR * catalog.popularity
            fill[genre <= 0] = -np.inf
            top = min(len(fill), 4 * k)
            part = (
                np.argpartition(-fill, top - 1)[:top] if top < len(fill) else np.arange(len(fill))
            )
            floor = min((s for _, s in out), default=1.0)
            for c in part[np.argsort(-fill[part], kind="stable")]:
                if len(out) >= k or not np.isfinite(fill[c]):
                    break
                if int(c) not in seen:
                    seen.add(int(c))
                    # below every model neighbour: the model's evidence ranks first
                    out.append((int(c), float(floor * 0.5 * fill[c] / (fill[c] + 1))))
        return out

    def because(self, scored: Scored, picked: Sequence[int]) -> list[Because | None]:
        """For each picked title, the history title that contributed most to it."""
        served = self.served
        catalog = self.catalog
        out: list[Because | None] = [None] * len(picked)
        if served is None or scored.x is None:
            return out
        model_items = [served.model_ix.get(catalog.ids[i], -1) for i in picked]
        ask = [j for j in model_items if j >= 0]
        if not ask:
            return out
        hist = served.art.model.explain(scored.x, ask, parts=scored.parts)
        by_item = dict(zip(ask, hist, strict=True))
        for n, j in enumerate(model_items):
            h = by_item.get(j) if j >= 0 else None
            if h is None:
                continue
            cid = served.art.items[h]
            f = scored.facts.get(cid)
            ci = catalog.index.get(cid)
            if f is None or ci is None or signals.weight(f.facts, f.last_at, utcnow()) <= 0:
                continue
            out[n] = Because(catalog.titles[ci], did(f.facts))
        return out


class RecsEngine:
    def __init__(self, pool: AsyncConnectionPool, recs_dir: Path) -> None:
        self.pool = pool
        self.recs_dir = recs_dir
        self.view: View | None = None
        self._catalog: Catalog | None = None
        self._art: Artefact | None = None
        self._loaded_path: str | None = None
        self._catalog_at = 0.0
        self._catalog_mark: Any = None

    # -- keeping current ---------------------------------------------------------------

    async def refresh(self, *, force_catalog: bool = False) -> None:
        """Reload the catalog when search_docs changed (at most every
        ``CATALOG_REFRESH_S`` while it keeps changing) and the model when a newer one
        is recorded; swap in the pair as one object."""
        loop = asyncio.get_running_loop()
        changed = False
        due = (
            self._catalog is None
            or not self._catalog.ids
            or loop.time() - self._catalog_at > CATALOG_REFRESH_S
        )
        mark = self._catalog_mark
        async with self.pool.connection() as conn:
            rows = await fetch_rows(
                conn, "SELECT version, path FROM rec_models ORDER BY trained_at DESC LIMIT 1"
            )
            if due or force_catalog:  # counting the documents reads them all: not every 2 s
                (mark,) = await fetch_rows(
                    conn,
                    "SELECT count(*), max(indexed_at) FROM search_docs WHERE kind <> 'episode'",
                )
        if due and not force_catalog and mark == self._catalog_mark:
            self._catalog_at = loop.time()  # checked: unchanged, ask again in a while
        elif force_catalog or due:
            self._catalog = await load_catalog(self.pool)
            self._catalog_at = loop.time()
            self._catalog_mark = mark
            changed = True
        if rows and rows[0][1] != self._loaded_path:
            path = rows[0][1]
            try:
                self._art = await asyncio.to_thread(load, Path(path))
                self._loaded_path = path
                changed = True
                log.info("recommender model %s loaded", self._art.version)
            except FileNotFoundError:
                log.warning("recommender model file %s is missing; keeping the one served", path)
        if changed and self._catalog is not None:
            self.view = View(self._catalog, align(self._art, self._catalog))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # serve what is loaded; try again shortly
                log.warning("recommender refresh failed (%r); retrying", exc)
            await pause(MODEL_CHECK_S, stop)

    async def ready(self) -> View:
        if self.view is None:
            await self.refresh()
        if self.view is None:
            raise RuntimeError("the recommender has no catalog yet")
        return self.view

    # -- scoring -----------------------------------------------------------------------

    async def user_facts(self, user_id: str) -> dict[str, UserFact]:
        async with self.pool.connection() as conn:
            rows = await fetch_rows(
                conn,
                f"SELECT content_id, {FACT_COLUMNS}, last_at FROM rec_interactions"
                " WHERE user_id = %s",
                (user_id,),
            )
        return {r[0]: UserFact(r[0], signals.Facts(*r[1:9]), r[9]) for r in rows}


def did(f: signals.Facts) -> str:
    """What the user did with a title, as a reason says it."""
    if f.more_like_this:
        return "asked"
    if f.finished > 0:
        return "watched"
    if f.rating is not None:
        return "rated"
    if f.watchlisted:
        return "watchlisted"
    if f.started:
        return "watching"
    return "liked"
