"""The fault scenarios' short version (docs/reliability.md): two rounds of each fault on
the embedded runtime, through `mgw chaos`, with every acknowledged write checked."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("scenario", ["kill-up", "kill-worker", "restart-db", "restart-redis"])
def test_no_acknowledged_write_is_lost_or_applied_twice(scenario: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mgw.cli", "chaos", scenario, "--rounds", "2", "--users", "10",
         "--titles", "60", "--seconds", "6", "--down", "2", "--after", "3", "--seed", "7",
         "--data-dir", str(tmp_path / "chaos")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.stdout.strip(), out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    s = result["scenarios"][scenario]
    rounds = [r for r in result["rounds"] if r["scenario"] == scenario]
    assert len(rounds) == 2
    assert s["acked_writes"] > 0 and all(r["checked"] > 0 for r in rounds)
    assert s["lost"] == 0, [r["examples"] for r in rounds]
    assert s["duplicated"] == 0 and s["foreign"] == 0, [r["examples"] for r in rounds]
    assert s["http_5xx_not_503"] == 0 and s["http_503_without_retry_after"] == 0
    assert s["timed_out"] == 0  # no request left hanging past the client's timeout
    assert s["digest_equal_fresh_fold"], s["digests"]
    # the fault really happened each round
    if scenario == "kill-up":
        assert all(r["refused"] > 0 and r["restart_s"] > 0 for r in rounds)
    if scenario == "kill-worker":
        assert len({r["killed_pid"] for r in rounds}) == 2
        assert all(r["respawn_s"] >= 0 for r in rounds)
