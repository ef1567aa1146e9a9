"""`mgw eval resolution`: resolved content ids against a generated feed set's truth."""

from __future__ import annotations

import contextlib
import csv
import json
import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import replace
from itertools import combinations
from pathlib import Path
from typing import Any

from core.settings import Settings
from mgw.ingest import run_ingest
from mgw.platform import open_platform

Ref = tuple[str, str]


def _pairs(n: int) -> int:
    return n * (n - 1) // 2


def pairwise_scores(predicted: Mapping[Ref, str], truth: Mapping[Ref, str]) -> dict[str, Any]:
    """Pairwise precision, recall and F1 over the records both sides know: a pair of
    records is a true positive when both put them in one entity."""
    common = [r for r in truth if r in predicted]
    pred_sizes = Counter(predicted[r] for r in common)
    true_sizes = Counter(truth[r] for r in common)
    both = Counter((predicted[r], truth[r]) for r in common)
    tp = sum(_pairs(n) for n in both.values())
    pred_pairs = sum(_pairs(n) for n in pred_sizes.values())
    true_pairs = sum(_pairs(n) for n in true_sizes.values())
    precision = tp / pred_pairs if pred_pairs else 1.0
    recall = tp / true_pairs if true_pairs else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "records": len(common),
        "unresolved": len(truth) - len(common),
        "true_entities": len(true_sizes),
        "predicted_entities": len(pred_sizes),
        "true_pairs": true_pairs,
        "predicted_pairs": pred_pairs,
        "true_positive_pairs": tp,
    }


def wrong_pairs(
    predicted: Mapping[Ref, str], truth: Mapping[Ref, str], limit: int
) -> dict[str, list[tuple[Ref, Ref]]]:
    """Up to ``limit`` falsely merged and falsely split pairs, for a human to read."""
    common = [r for r in truth if r in predicted]
    by_pred: dict[str, list[Ref]] = {}
    by_true: dict[str, list[Ref]] = {}
    for r in common:
        by_pred.setdefault(predicted[r], []).append(r)
        by_true.setdefault(truth[r], []).append(r)
    merged = [
        (a, b)
        for group in by_pred.values()
        for a, b in combinations(sorted(group), 2)
        if truth[a] != truth[b]
    ]
    split = [
        (a, b)
        for group in by_true.values()
        for a, b in combinations(sorted(group), 2)
        if predicted[a] != predicted[b]
    ]
    return {"merged": merged[:limit], "split": split[:limit]}


def read_truth(feeds: Path) -> dict[Ref, str]:
    with open(feeds / "truth.csv", newline="") as f:
        return {(r["platform"], r["platform_id"]): r["entity"] for r in csv.DictReader(f)}


@contextlib.contextmanager
def _fresh(settings: Settings, fresh: bool) -> Iterator[Settings]:
    """Evaluate in a throwaway embedded database unless the caller chose where."""
    if not fresh or settings.database_url:
        yield settings
        return
    with tempfile.TemporaryDirectory(prefix="mgw-eval-") as tmp:
        yield replace(settings, data_dir=Path(tmp), redis_url=None, qdrant_url=None)


async def run_eval_resolution(
    settings: Settings, feeds: Path, *, show: int = 0, fresh: bool = True
) -> int:
    try:
        truth = read_truth(feeds)
    except (OSError, KeyError) as exc:
        print(f"mgw eval resolution: cannot read {feeds / 'truth.csv'}: {exc}", file=sys.stderr)
        return 2
    with _fresh(settings, fresh) as s:
        code = await run_ingest(s, "all", [feeds], progress=False, as_json=False)
        if code:
            return code
        async with open_platform(s, with_vectors=False) as pf, pf.stores.pg.connection() as conn:
            cur = await conn.execute(
                "SELECT platform, platform_id, content_id, title, year FROM platform_titles"
                " WHERE platform <> 'editorial'"
            )
            rows = await cur.fetchall()
    predicted = {(r[0], r[1]): r[2] for r in rows}
    scores = pairwise_scores(predicted, truth)
    if show:
        label = {(r[0], r[1]): f"{r[3]!r} ({r[4]})" for r in rows}
        for kind, pairs in wrong_pairs(predicted, truth, show).items():
            for a, b in pairs:
                print(
                    f"{kind}: {a[0]}:{a[1]} {label[a]} [{truth[a]}] ~ "
                    f"{b[0]}:{b[1]} {label[b]} [{truth[b]}]"
                )
    print(json.dumps(scores))
    return 0
