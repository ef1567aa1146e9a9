"""`mgw recs offline` and `mgw eval recs` end to end through the CLI's main."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mgw.cli import main


def _ratings_csv(path: Path, n_users: int = 40, seed: int = 2) -> dict[str, set[str]]:
    """Two taste clusters of movie ids (100-119 and 200-219), ratings 1-5; returns each
    user's movie ids."""
    rng = np.random.default_rng(seed)
    seen: dict[str, set[str]] = {}
    lines = ["userId,movieId,rating,timestamp"]
    for u in range(n_users):
        base = 100 if u % 2 else 200
        for m in rng.choice(20, 8, replace=False):
            rating = float(rng.choice([2.0, 3.5, 4.0, 5.0]))
            lines.append(f"u{u},{base + int(m)},{rating},{1_000_000 + u}")
            seen.setdefault(f"u{u}", set()).add(str(base + int(m)))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return seen


@pytest.mark.parametrize("tune_flag", [[], ["--no-tune"]])
def test_recs_offline_writes_the_jsonl_contract(tmp_path: Path, tune_flag: list[str]) -> None:
    ratings = tmp_path / "ratings.csv"
    seen = _ratings_csv(ratings)
    listed = ["u0", "u1", "u7", "nobody"]
    (tmp_path / "users.txt").write_text("\n".join(listed) + "\n", encoding="utf-8")
    out = tmp_path / "recs.jsonl"
    rc = main(
        ["recs", "offline", "--interactions", str(ratings), "--users",
         str(tmp_path / "users.txt"), "--k", "5", "--out", str(out), "--no-progress",
         *tune_flag]
    )  # fmt: skip
    assert rc == 0
    lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [line["user"] for line in lines] == listed
    for line in lines:
        items = line["items"]
        assert len(items) == 5 and len(set(items)) == 5
        assert all(isinstance(i, str) for i in items)
        assert not set(items) & seen.get(line["user"], set())
    # a known user is recommended from their own cluster; u1 likes the 100s
    assert all(i.startswith("1") for i in lines[1]["items"])
    assert all(i.startswith("2") for i in lines[0]["items"])


def test_eval_recs_prints_metrics_for_every_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rc = main(["eval", "recs", "--sample-users", "60", "--no-progress", "--no-tune"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    assert summary["users"] == 60
    models = summary["models"]
    for name in ("pop", "ease", "rp3b", "knn", "blend", "ease_plain"):
        assert set(models[name]) >= {"ndcg@10", "recall@20", "hr@10", "coverage@10", "fit_s"}
        assert 0.0 <= models[name]["ndcg@10"] <= 1.0
    # even on 60 users the item-item model is far ahead of popularity
    assert models["ease"]["ndcg@10"] > models["pop"]["ndcg@10"]
