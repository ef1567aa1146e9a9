"""`mgw recs offline`: train the recommender on a MovieLens-style CSV and write top-k
lists for a list of users, with the same `fit` (and `tune`) the online service runs.

Every CSV row is an interaction the user chose, so every row is interest; how much is
read from the rating: a rating in the top fifth of the file's scale counts 1, any lower
rating ``LOW_WEIGHT``. A title someone watched and rated 3 still says more about their
taste than a title they never chose, just less than one they loved, and on MovieLens the
inner validation split prefers half weight to both dropping and fully counting those rows
(docs/recommendation-models.md).
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
import scipy.sparse as sp
from tqdm import tqdm

from domain.recs.metrics import top_k
from domain.recs.models import Recommender, RecsConfig, fit
from domain.recs.tuning import tune

LOW_WEIGHT = 0.5
#: a rating at or above this share of the file's highest rating is a strong positive
STRONG_SHARE = 0.8
BATCH = 512


@dataclass(slots=True)
class Interactions:
    """A ratings file as matrices over its own ids (strings, in first-seen order)."""

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray  # row index per CSV row
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)

    def matrix(self, weights: np.ndarray, rows: np.ndarray | None = None) -> sp.csr_matrix:
        """users × items csr of ``weights`` over the selected CSV rows; when a user rated
        an item twice the later row wins."""
        sel = np.arange(len(self.users)) if rows is None else np.asarray(rows)
        key = self.users[sel] * len(self.item_ids) + self.items[sel]
        _, last = np.unique(key[::-1], return_index=True)
        sel = sel[::-1][last]
        return sp.csr_matrix(
            (weights[sel].astype(np.float32), (self.users[sel], self.items[sel])),
            shape=self.shape,
        )

    def strong(self) -> np.ndarray:
        """True for rows whose rating is a strong positive."""
        top = float(self.ratings.max()) if self.ratings.size else 0.0
        return self.ratings >= STRONG_SHARE * top

    def interest_weights(self, low_weight: float = LOW_WEIGHT) -> np.ndarray:
        return np.where(self.strong(), 1.0, low_weight).astype(np.float32)


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open(encoding="utf-8", newline="")


def read_interactions(path: Path) -> Interactions:
    """Read ``userId,movieId,rating,timestamp`` rows (rating/timestamp may be empty)."""
    user_index: dict[str, int] = {}
    item_index: dict[str, int] = {}
    users: list[int] = []
    items: list[int] = []
    ratings: list[float] = []
    times: list[float] = []
    with _open(path) as fh:
        for row in csv.DictReader(fh):
            u, i = row["userId"].strip(), row["movieId"].strip()
            users.append(user_index.setdefault(u, len(user_index)))
            items.append(item_index.setdefault(i, len(item_index)))
            ratings.append(float(row.get("rating") or 1.0))
            times.append(float(row.get("timestamp") or 0.0))
    return Interactions(
        list(user_index),
        list(item_index),
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.asarray(ratings, dtype=np.float32),
        np.asarray(times, dtype=np.float64),
    )


def recommend(
    model: Recommender,
    rows: sp.csr_matrix,
    exclude: sp.csr_matrix,
    k: int,
    progress: bool = False,
) -> list[list[int]]:
    """Top ``k`` item indices per row, never one of that row's ``exclude`` entries."""
    out: list[list[int]] = []
    starts = range(0, rows.shape[0], BATCH)
    for start in tqdm(starts, desc="recommend", unit="batch", disable=not progress):
        block = slice(start, start + BATCH)
        scores = model.score(rows[block])
        ex = exclude[block]
        ranked = top_k(scores, k, ex)
        for r, lst in enumerate(ranked):
            seen = set(ex.indices[ex.indptr[r] : ex.indptr[r + 1]].tolist())
            out.append([int(i) for i in lst if int(i) not in seen])
    return out


def _read_users(path: Path) -> list[str]:
    with path.open(encoding="utf-8") as fh:
        return [line.strip() for line in fh if line.strip()]


def run_recs_offline(
    interactions: Path,
    users_file: Path,
    out: Path,
    *,
    k: int = 20,
    do_tune: bool = True,
    low_weight: float = LOW_WEIGHT,
    progress: bool = True,
    log: IO[str] = sys.stderr,
) -> int:
    data = read_interactions(interactions)
    wanted = _read_users(users_file)
    x = data.matrix(data.interest_weights(low_weight))
    seen = data.matrix(np.ones(len(data.users), dtype=np.float32))
    print(f"{x.shape[0]} users, {x.shape[1]} items, {x.nnz} interactions", file=log)
    config = RecsConfig()
    if do_tune:
        with tqdm(total=4, desc="tune", disable=not progress) as bar:
            config = tune(x, relevant_min=1.0, progress=lambda s: bar.update(1))
    print(f"config: {config.to_json()}", file=log)
    model = fit(x, config)
    print(f"model: {model.version_tag}", file=log)
    index = {u: i for i, u in enumerate(data.user_ids)}
    known = [index.get(u, -1) for u in wanted]
    rows, exclude = _user_rows(x, seen, known)
    ranked = recommend(model, rows, exclude, k, progress)
    _write(out, wanted, ranked, data.item_ids)
    print(f"wrote {len(wanted)} users to {out}", file=log)
    return 0


def _user_rows(
    x: sp.csr_matrix, seen: sp.csr_matrix, known: Sequence[int]
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The listed users' rows; an unknown user (-1) gets an empty row: popularity."""
    idx = np.asarray([max(u, 0) for u in known], dtype=np.int64)
    keep = sp.diags(np.asarray([1.0 if u >= 0 else 0.0 for u in known], dtype=np.float32))
    rows = sp.csr_matrix(keep @ x[idx])
    exclude = sp.csr_matrix(keep @ seen[idx])
    rows.eliminate_zeros()
    exclude.eliminate_zeros()
    return rows, exclude


def _write(
    out: Path, users: Iterable[str], ranked: Sequence[Sequence[int]], item_ids: Sequence[str]
) -> None:
    with out.open("w", encoding="utf-8") as fh:
        for user, items in zip(users, ranked, strict=True):
            line = {"user": user, "items": [item_ids[i] for i in items]}
            fh.write(json.dumps(line) + "\n")
