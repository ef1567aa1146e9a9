"""The fault scenarios' short version on the Kafka runtime (ops/chaos/kafka_stack.py): a
real KRaft broker, `mgw up --no-projectors` and supervised `mgw worker` processes, two
rounds of a broker restart and of a worker killed mid-batch, every acknowledged write
checked, and the live projections against a fresh fold of the log.

No timing is asserted (on a shared machine it measures the neighbours as much as the
code): what is asserted is what must hold at any speed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import psutil

from ops.chaos import faults


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    faults.add_arguments(p)
    return p.parse_args(argv)


def _stopped(data_dir: Path) -> None:
    """Nothing of the stack is left: no worker, API, broker, PostgreSQL on the data dir."""
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert not (data_dir / "kafka" / "kafka.pid").exists()
    for p in psutil.process_iter(["cmdline"]):
        assert str(data_dir) not in " ".join(p.info["cmdline"] or []), p.info["cmdline"]


async def _run(scenario: str, tmp_path: Path, *extra: str) -> tuple[dict[str, Any], list[Any]]:
    data_dir = tmp_path / "chaos"
    argv = [scenario, "--runtime", "kafka", "--rounds", "2", "--users", "10", "--titles", "60",
            "--seed", "7", "--data-dir", str(data_dir), *extra]  # fmt: skip
    result = await faults.run(_args(argv))
    _stopped(data_dir / scenario)
    s = result["scenarios"][scenario]
    rounds = [r for r in result["rounds"] if r["scenario"] == scenario]
    assert len(rounds) == 2
    assert s["acked_writes"] > 0 and all(r["checked"] > 0 for r in rounds)
    assert s["lost"] == 0, [r["examples"] for r in rounds]
    assert s["duplicated"] == 0 and s["foreign"] == 0, [r["examples"] for r in rounds]
    assert s["http_5xx_not_503"] == 0 and s["http_503_without_retry_after"] == 0
    assert s["digest_equal_fresh_fold"], s["digests"]
    return s, rounds


async def test_kill_worker_mid_batch(tmp_path: Path) -> None:
    """SIGKILL to a busy `mgw worker` (playback, library, ...): the supervisor starts it
    again, the group rebalances, the batch in flight is redelivered and skipped by the
    checkpoint where it had landed."""
    s, rounds = await _run("kill-worker", tmp_path, "--seconds", "8", "--down", "2")
    assert s["timed_out"] == 0
    assert len({r["killed_pid"] for r in rounds}) == 2
    assert all(r["respawn_s"] >= 0 for r in rounds)


async def test_restart_broker_under_load(tmp_path: Path) -> None:
    """The broker stopped and started under load: writes meanwhile answer 503 with
    Retry-After, none acknowledged is lost, the workers resume."""
    # down for as long as the clients' timeout (load.REQUEST_TIMEOUT_S): a write waiting
    # for the broker instead of answering shows as a hang whatever the machine's speed;
    # the rounds last until the load has run a while on the restarted broker
    # (found this way: appends waited out librdkafka's 300 s, so writes hung; then, with
    # a 5 s delivery timeout, its error was not transient and writes answered 500)
    s, _ = await _run("restart-broker", tmp_path, "--seconds", "30", "--down", "10")
    assert s["timed_out"] == 0
