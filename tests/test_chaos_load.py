"""Short versions of the load test and the soak (ops/chaos/loadtest.py, soak.py) on a
real `mgw up` with its embedded PostgreSQL and Redis.

What is asserted is what can go wrong at any size: a request that fails or hangs, a
step without figures, a sampler that does not see a process, a projector that does
not catch up, a stack left running. Latency and growth targets are not asserted: on
a shared machine they measure the neighbours as much as the code (the full-size
figures are run by hand, with the load average beside them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import psutil

from ops.chaos import load, loadtest, soak

#: the routes frequent enough in the mix (load.MIX) to be in every short run
ROUTES = {"playback", "continue_watching", "search"}


def _args(add: Any, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add(p)
    return p.parse_args(argv)


def _stopped(data_dir: Path) -> None:
    """Nothing of the stack is left: no PostgreSQL, no Redis on this data dir."""
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    for p in psutil.process_iter(["name", "cmdline"]):
        if p.info["name"] in ("postgres", "redis-server"):
            assert str(data_dir) not in " ".join(p.info["cmdline"] or [])


async def test_load_steps(tmp_path: Path) -> None:
    data_dir = tmp_path / "load"
    args = _args(
        loadtest.add_arguments,
        ["--users", "12", "--steps", "6,12", "--step-seconds", "6", "--titles", "60"]
        + ["--data-dir", str(data_dir)],
    )
    result = await loadtest.run(args)
    json.dumps(result)  # the last line the command prints

    assert result["errors"] == 0, result["steps"]
    assert result["steps_users"] == [6, 12]
    assert result["setup"]["setup_errors"] == 0
    assert result["setup"]["signup_s"] > 0
    assert len(result["steps"]) == 2
    for step in result["steps"]:
        assert step["requests"] > 0 and step["throughput_rps"] > 0
        assert step["errors"] == 0 and step["error_rate"] == 0
        assert step["http_4xx"] == 0, step["routes"]
        assert step["http_5xx_not_503_retry_after"] == 0
        assert 0 < step["p50_ms"] <= step["p95_ms"] <= step["p99_ms"] <= step["max_ms"]
        assert "playback" in step["routes"], step["routes"]
        assert set(step["routes"]) <= set(load.MIX), step["routes"]
        for route in step["routes"].values():
            assert route["p50_ms"] <= route["p95_ms"] <= route["p99_ms"]
            assert all(200 <= int(s) < 300 for s in route["statuses"])
        assert step["client"]["processes"] == 1
        assert step["server_cpu_pct_by_process"]["mgw"] > 0
        assert step["server_cpu_pct_by_process"]["postgres"] > 0
        assert len(step["loadavg"]) == 3
        assert step["lag_after"] is not None
    # the knee is the first step over the line, or None: consistent with the steps
    k = result["knee"]
    over = [i for i, s in enumerate(result["steps"]) if s["p99_ms"] > loadtest.KNEE_P99_MS]
    assert (k is None and not over) or (k is not None and k["step"] == over[0])
    seen = {r for s in result["steps"] for r in s["routes"]}
    assert seen >= ROUTES
    assert set(result["route_knees"]) == seen
    assert result["drain_s"] is not None  # the projectors caught up after the load
    _stopped(data_dir)


def test_steps_default_ramp() -> None:
    assert loadtest.parse_steps(None, 500) == [50, 100, 200, 300, 500]
    assert loadtest.parse_steps(None, 3) == [1, 2, 3]
    assert loadtest.parse_steps("10, 20,20", 500) == [10, 20]


async def test_soak_samples(tmp_path: Path) -> None:
    data_dir = tmp_path / "soak"
    args = _args(
        soak.add_arguments,
        ["--minutes", "1", "--sample-s", "10", "--users", "10", "--titles", "60"]
        + ["--data-dir", str(data_dir)],
    )
    result = await soak.run(args)
    json.dumps(result)

    assert result["errors"] == 0, result["load"]["routes"]
    assert result["load"]["http_4xx"] == 0, result["load"]["routes"]
    assert result["load"]["http_5xx_not_503_retry_after"] == 0
    samples = result["samples"]
    # one at the start, every 10 s of the minute, and one as the load stops
    assert len(samples) >= 6, [s["t_s"] for s in samples]
    for s in samples:
        for group in ("mgw", "postgres", "redis"):
            assert s["memory"][group]["processes"] >= 1, (group, s)
            assert s["memory"][group]["rss_mb"] > 0
        assert s["memory"]["postgres"]["processes"] > 1  # the postmaster and backends
        assert s["fds"]["mgw_up"] and s["fds"]["mgw_up"] > 0
        assert s["db_connections"]["client"] and s["db_connections"]["client"] > 0
        assert s["memory"]["postgres"]["uss_mb"] > 0
        assert s["lag"] is not None
        # /ready may say "unavailable" on a busy machine (its checks have 2 s), so only
        # that it was asked
        assert isinstance(s["ready_http"], int)
    growth = result["growth"]
    assert growth["baseline_t_s"] >= 0.2 * 60 - 1  # the first sample after warm-up
    assert growth["last_t_s"] > growth["baseline_t_s"]
    for group in ("mgw", "postgres", "redis"):
        assert growth["rss"][group]["growth_pct"] is not None
    assert growth["fds"]["warm"] and growth["fds"]["last"]
    assert growth["db_connections"]["warm"] and growth["db_connections"]["last"]
    assert set(growth["pass"]) == {"rss", "private_memory", "fds", "db_connections", "lag"}
    assert all(isinstance(v, bool) for v in growth["pass"].values())
    after = growth["after_load"]
    assert after["fds_after"] and after["db_connections_after"]
    assert growth["ready_under_load"]["samples"] == len(samples)
    # the line keeps moving: everything appended under load is applied afterwards
    assert growth["lag"]["drained"] and result["final_lag"] == 0
    _stopped(data_dir)
