"""The recommender: one fitted object that scores any user row against every item.

Every model kept here is item-item (EASE, RP3beta, item-kNN, content) or item-only
(popularity), so scoring a user is ``row @ W``: a user's latest actions count the moment
they happen ("fold-in"), a user unseen at training time is scored like any other, and a
negative weight (not interested, a low rating) subtracts that item's neighbours.

Dense models cost d² memory and up to d³ time, so only the ``max_items`` items with the
most positive weight (and at least ``min_item_weight``) enter EASE, RP3beta and kNN.
The rest are placed by content similarity (when item features are given) and popularity,
which also orders ties and answers for users with no history.

Stored with ``to_bytes`` as plain arrays (``np.savez``, no pickle): the model is data.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from domain.recs._sparse import F32
from domain.recs.blend import blend
from domain.recs.content import fit_content
from domain.recs.ease import default_lambda, fit_ease
from domain.recs.graph import fit_rp3beta
from domain.recs.knn import fit_item_knn
from domain.recs.popularity import fit_popularity

#: the item-item models, in blend order; each is one weight in ``RecsConfig.weights``
DENSE_MODELS = ("ease", "rp3b", "knn")
MODELS = (*DENSE_MODELS, "content", "pop")
#: popularity always contributes at least this much: it orders items no other model
#: scores and answers for a user with no history
POP_FLOOR = 1e-3


@dataclass(frozen=True, slots=True)
class RecsConfig:
    """Hyperparameters. The defaults are what ``tune`` picked on MovieLens ml-latest-small
    (docs/recommendation-models.md): EASE, plus content when item features are given;
    RP3beta and kNN are kept, tuned, for data where the inner validation prefers them.
    ``ease_lambda=None`` scales λ to the data (``ease.default_lambda``)."""

    weights: dict[str, float] = field(
        default_factory=lambda: {"ease": 1.0, "rp3b": 0.0, "knn": 0.0, "content": 0.15, "pop": 0.0}
    )
    ease_lambda: float | None = None
    rp3_alpha: float = 1.0
    rp3_beta: float = 0.35
    rp3_top_k: int = 200
    knn_shrink: float = 50.0
    knn_top_k: int = 100
    content_top_k: int = 100
    #: items in the dense models: 12k keeps EASE's inverse near 20 s on two cores and its
    #: matrix at 576 MB
    max_items: int = 12_000
    min_item_weight: float = 1.0

    def only(self, model: str) -> RecsConfig:
        """The same settings with every other model switched off."""
        return replace(self, weights={m: (1.0 if m == model else 0.0) for m in MODELS})

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RecsConfig:
        return cls(**json.loads(text))


class Recommender:
    """A fitted blend. Build it with ``fit``; all arrays are float32."""

    def __init__(
        self,
        config: RecsConfig,
        n_items: int,
        dense_items: np.ndarray,
        popularity: F32,
        ease: F32 | None = None,
        rp3b: sp.csr_matrix | None = None,
        knn: sp.csr_matrix | None = None,
        content: sp.csr_matrix | None = None,
    ) -> None:
        self.config = config
        self.n_items = n_items
        self.dense_items = dense_items.astype(np.int64)
        self.popularity = popularity
        self.ease = ease
        self.rp3b = rp3b
        self.knn = knn
        self.content = content

    @property
    def version_tag(self) -> str:
        parts = [m for m in MODELS if self._weight(m) > 0 and self._has(m)]
        if len(parts) == 1:
            return parts[0]
        return "blend(" + ",".join(parts) + ")"

    def _has(self, model: str) -> bool:
        return model == "pop" or getattr(self, model) is not None

    def _weight(self, model: str) -> float:
        return float(self.config.weights.get(model, 0.0))

    def _parts(self, u: sp.csr_matrix) -> list[tuple[str, F32]]:
        """Each active model's raw scores for the rows of ``u``, over all items."""
        n = self.n_items
        out: list[tuple[str, F32]] = []
        ud = sp.csr_matrix(u[:, self.dense_items]) if self.dense_items.size else None
        for model in DENSE_MODELS:
            matrix = getattr(self, model)
            if matrix is None or self._weight(model) == 0.0 or ud is None:
                continue
            dense = ud @ matrix
            dense = dense.toarray() if sp.issparse(dense) else np.asarray(dense)
            full = np.zeros((u.shape[0], n), dtype=np.float32)
            full[:, self.dense_items] = dense
            out.append((model, full))
        if self.content is not None and self._weight("content") > 0:
            out.append(("content", np.asarray((u @ self.content).toarray(), dtype=np.float32)))
        return out

    def score_parts(self, u: sp.csr_matrix) -> list[tuple[str, F32]]:
        """Each active model's raw scores for user rows ``u``: what ``score`` blends and
        ``explain`` scales by. A caller that needs both computes them once."""
        u = sp.csr_matrix(u, dtype=np.float32)
        if u.shape[1] != self.n_items:
            raise ValueError(f"user rows have {u.shape[1]} columns, the model {self.n_items}")
        return self._parts(u)

    def score(
        self,
        u: sp.csr_matrix,
        *,
        with_popularity: bool = True,
        parts: list[tuple[str, F32]] | None = None,
    ) -> F32:
        """Scores (k × n_items, higher is better) for user rows ``u`` (k × n_items);
        nothing is masked, the caller removes what the user already has. ``parts``:
        ``score_parts(u)`` when the caller has them already."""
        u = sp.csr_matrix(u, dtype=np.float32)
        raw = parts if parts is not None else self.score_parts(u)
        parts_w: list[tuple[float, F32]] = [(self._weight(m), s) for m, s in raw]
        k = u.shape[0]
        total = blend(parts_w) if parts_w else np.zeros((k, self.n_items), dtype=np.float32)
        if with_popularity:
            total += np.float32(max(self._weight("pop"), POP_FLOOR)) * self.popularity[None, :]
        return total.astype(np.float32, copy=False)

    def explain(
        self,
        u_row: sp.csr_matrix,
        items: Sequence[int],
        parts: list[tuple[str, F32]] | None = None,
    ) -> list[int | None]:
        """For each of ``items``, the history item (column index in ``u_row``) whose
        contribution to that item's score is the largest positive one, or None.
        ``parts``: ``score_parts(u_row)`` when the caller has them already."""
        u = sp.csr_matrix(u_row, dtype=np.float32)
        history = u.indices
        values = u.data
        items_arr = np.asarray(items, dtype=np.int64)
        if history.size == 0 or items_arr.size == 0:
            return [None] * len(items_arr)
        contrib = np.zeros((history.size, items_arr.size), dtype=np.float32)
        position = np.full(self.n_items, -1, dtype=np.int64)
        position[self.dense_items] = np.arange(self.dense_items.size)
        for model, raw in parts if parts is not None else self._parts(u):
            peak = float(np.abs(raw).max())
            if peak == 0:
                continue
            scale = self._weight(model) / peak
            if model == "content":
                assert self.content is not None
                block = self.content[history][:, items_arr].toarray()
            else:
                matrix = getattr(self, model)
                hp, ip = position[history], position[items_arr]
                block = np.zeros((history.size, items_arr.size), dtype=np.float32)
                hk, ik = np.flatnonzero(hp >= 0), np.flatnonzero(ip >= 0)
                if hk.size and ik.size:
                    if sp.issparse(matrix):
                        sub = matrix[hp[hk]][:, ip[ik]].toarray()
                    else:  # gather only the cells asked for, not whole rows of a dense matrix
                        sub = np.asarray(matrix[np.ix_(hp[hk], ip[ik])])
                    block[np.ix_(hk, ik)] = sub
            contrib += np.float32(scale) * values[:, None] * block
        best = np.argmax(contrib, axis=0)
        return [int(history[b]) if contrib[b, j] > 0 else None for j, b in enumerate(best.tolist())]

    def similar(self, item: int, k: int) -> list[tuple[int, float]]:
        """The ``k`` items most like ``item`` (positive scores only), best first: the
        blend's score for a user whose only history is ``item``."""
        row = sp.csr_matrix((np.ones(1, dtype=np.float32), ([0], [item])), shape=(1, self.n_items))
        s = self.score(row, with_popularity=False)[0]
        s[item] = -np.inf
        k = min(k, self.n_items - 1)
        if k <= 0:
            return []
        top = np.argpartition(-s, k - 1)[:k]
        top = top[np.argsort(-s[top], kind="stable")]
        return [(int(i), float(s[i])) for i in top if s[i] > 0]

    def to_bytes(self) -> bytes:
        arrays: dict[str, np.ndarray] = {
            "config": np.frombuffer(self.config.to_json().encode(), dtype=np.uint8),
            "n_items": np.asarray([self.n_items], dtype=np.int64),
            "dense_items": self.dense_items,
            "popularity": self.popularity,
        }
        if self.ease is not None:
            arrays["ease"] = self.ease
        for name in ("rp3b", "knn", "content"):
            m = getattr(self, name)
            if m is not None:
                arrays[f"{name}.data"] = m.data
                arrays[f"{name}.indices"] = m.indices
                arrays[f"{name}.indptr"] = m.indptr
                arrays[f"{name}.shape"] = np.asarray(m.shape, dtype=np.int64)
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Recommender:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            names = set(z.files)
            config = RecsConfig.from_json(bytes(z["config"]).decode())

            def csr(name: str) -> sp.csr_matrix | None:
                if f"{name}.data" not in names:
                    return None
                shape = tuple(int(v) for v in z[f"{name}.shape"])
                return sp.csr_matrix(
                    (z[f"{name}.data"], z[f"{name}.indices"], z[f"{name}.indptr"]), shape=shape
                )

            return cls(
                config,
                int(z["n_items"][0]),
                z["dense_items"],
                z["popularity"],
                ease=z["ease"] if "ease" in names else None,
                rp3b=csr("rp3b"),
                knn=csr("knn"),
                content=csr("content"),
            )


def dense_item_set(x: sp.csr_matrix, config: RecsConfig) -> np.ndarray:
    """The items the dense models cover: the ``max_items`` with the most positive weight,
    each with at least ``min_item_weight``, in index order."""
    weight = np.asarray(x.sum(axis=0)).ravel()
    eligible = np.flatnonzero(weight >= config.min_item_weight)
    if eligible.size > config.max_items:
        order = np.argsort(-weight[eligible], kind="stable")[: config.max_items]
        eligible = np.sort(eligible[order])
    return eligible.astype(np.int64)


def fit(
    x: sp.csr_matrix,
    config: RecsConfig | None = None,
    item_features: sp.csr_matrix | None = None,
) -> Recommender:
    """Fit every model with a non-zero weight on ``x`` (users × items, float32 weights;
    negatives allowed). The models learn from the positive part; negatives act at
    scoring time through the learnt item-item weights."""
    config = config or RecsConfig()
    x = sp.csr_matrix(x, dtype=np.float32)
    positive = x.maximum(0).tocsr()
    positive.eliminate_zeros()
    n_items = x.shape[1]
    w = config.weights
    dense = dense_item_set(positive, config)
    xd = sp.csr_matrix(positive[:, dense])
    needs_gram = w.get("ease", 0) > 0 or w.get("knn", 0) > 0
    gram = (xd.T @ xd).toarray().astype(np.float32) if needs_gram and dense.size else None
    knn = ease = rp3b = content = None
    if gram is not None and w.get("knn", 0) > 0:
        knn = fit_item_knn(gram, config.knn_shrink, config.knn_top_k)
    if gram is not None and w.get("ease", 0) > 0:
        lam = config.ease_lambda or default_lambda(np.diag(gram).copy())
        ease = fit_ease(gram, lam)  # consumes gram
    if w.get("rp3b", 0) > 0 and dense.size:
        rp3b = fit_rp3beta(xd, config.rp3_alpha, config.rp3_beta, config.rp3_top_k)
    if item_features is not None and w.get("content", 0) > 0:
        if item_features.shape[0] != n_items:
            raise ValueError("item_features must have one row per item")
        content = fit_content(item_features, config.content_top_k)
    return Recommender(
        config,
        n_items,
        dense,
        fit_popularity(positive),
        ease=ease,
        rp3b=rp3b,
        knn=knn,
        content=content,
    )
