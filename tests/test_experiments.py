"""Experiments end to end: admin commands -> experiment events -> the experiments
projector -> assignment, exposures and results, on real PostgreSQL, Redis and the
embedded log. Activity outcomes are written straight into ``activity_events`` (another
projector fills it in production); exposures only ever come from ``assign``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from api.experiment_assignment import Assignment, assign, drain_background
from core.settings import Settings
from domain.experiments.assignment import variant_index
from tests.identity_helpers import new_user

URL = "/v1/admin/experiments"


def _definition(**over: Any) -> dict[str, Any]:
    body = {
        "surface": "recommendations",
        "variants": [
            {"name": "control", "weight": 50, "params": {}},
            {"name": "treatment", "weight": 50, "params": {"model": "ease"}},
        ],
        "primary_metric": "ctr",
        "guardrail_metrics": ["completion_rate"],
        "description": "EASE against the blend",
    }
    return {**body, **over}


def _sql(settings: Settings, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def _assign(client: TestClient, user_id: str, surface: str) -> Assignment | None:
    c = client.app.state.mgw  # type: ignore[attr-defined]
    found: Assignment | None = client.portal.call(assign, c, user_id, surface)  # type: ignore[union-attr]
    return found


def _drain(client: TestClient) -> None:
    client.portal.call(drain_background)  # type: ignore[union-attr]


def _wait_exposures(settings: Settings, key: str, n: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        got = _sql(settings, "SELECT count(*) FROM experiment_exposures WHERE experiment = %s", key)
        if got[0][0] >= n:
            assert got[0][0] == n
            return
        assert time.monotonic() < deadline, got
        time.sleep(0.05)


def _define_and_start(client: TestClient, admin: dict[str, str], key: str, **over: Any) -> None:
    r = client.put(f"{URL}/{key}", json=_definition(**over), headers=admin)
    assert r.status_code == 202 and r.json()["confirmed"], r.text
    r = client.post(f"{URL}/{key}/start", headers=admin)
    assert r.status_code == 202 and r.json()["confirmed"], r.text


def _activity(settings: Settings, rows: list[tuple[str, str, str, datetime]]) -> None:
    """(user, kind, surface, at) rows, straight into the activity timeline."""
    assert settings.database_url
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for i, (user, kind, surface, at) in enumerate(rows):
            conn.execute(
                "INSERT INTO activity_events (user_id, event_id, kind, content_id, surface, at)"
                " VALUES (%s, %s, %s, 'c1', %s, %s)",
                (user, f"ev-{i}", kind, surface, at),
            )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variants": [{"name": "control", "weight": 50}, {"name": "b", "weight": 0}]},
         "variants.1.weight"),
        ({"variants": [{"name": "control", "weight": 50}, {"name": "b", "weight": -5}]},
         "variants.1.weight"),
        ({"variants": [{"name": "a", "weight": 1}, {"name": "a", "weight": 1}]},
         "variants.1.name"),
        ({"variants": [{"name": "a", "weight": 1}]}, "variants"),
        ({"primary_metric": "revenue"}, "primary_metric"),
        ({"guardrail_metrics": ["ctr", "bounce"]}, "guardrail_metrics.1"),
        ({"surface": "Not A Surface"}, "surface"),
        ({"variants": "two"}, "variants"),
        ({"seed": ""}, "seed"),
        ({"colour": "red"}, "colour"),
    ],
)  # fmt: skip
def test_bad_definitions_answer_422_naming_the_field(
    client: TestClient, admin: dict[str, str], change: dict[str, Any], field: str
) -> None:
    r = client.put(f"{URL}/recs-ease", json=_definition(**change), headers=admin)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    assert r.json()["field"] == field, r.json()


def test_lifecycle_assignment_exposure_and_results(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    key = "recs-ease"
    assert client.put(f"{URL}/Bad Key!", json=_definition(), headers=admin).json()["field"] == "key"
    r = client.put(f"{URL}/{key}", content=b"{nope", headers=admin)
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert client.get(URL).status_code == 401
    user, user_headers = new_user(client)
    assert client.put(f"{URL}/{key}", json=_definition(), headers=user_headers).status_code == 403

    r = client.put(f"{URL}/{key}", json=_definition(), headers=admin)
    assert r.status_code == 202 and r.json()["confirmed"], r.text
    assert r.json()["version"] == 1 and r.json()["seed"] == key
    token = r.headers["X-Consistency-Token"]
    got = client.get(f"{URL}/{key}", headers={**admin, "X-Consistency-Token": token}).json()
    assert got["status"] == "draft" and [v["name"] for v in got["variants"]] == [
        "control",
        "treatment",
    ]
    assert _assign(client, user, "recommendations") is None  # a draft assigns nobody

    assert client.post(f"{URL}/nope/start", headers=admin).status_code == 404
    r = client.post(f"{URL}/{key}/start", headers=admin)
    assert r.status_code == 202 and r.json()["confirmed"], r.text
    assert client.get(f"{URL}/{key}", headers=admin).json()["status"] == "running"

    # deterministic: the hash decides, the same user always gets the same variant
    users = [user] + [f"user-{i}" for i in range(39)]
    weights = [50, 50]
    served: dict[str, str] = {}
    for u in users:
        a = _assign(client, u, "recommendations")
        assert a is not None and a.experiment == key
        assert a.variant == ("control", "treatment")[variant_index(key, u, weights)]
        assert a.params == ({} if a.variant == "control" else {"model": "ease"})
        served[u] = a.variant
    assert _assign(client, user, "home") is None  # nothing runs there
    for _ in range(15):  # served again and again: still one exposure
        again = _assign(client, user, "recommendations")
        assert again is not None and again.variant == served[user]
    _drain(client)
    _wait_exposures(settings, key, len(users))
    logged = _sql(
        settings,
        "SELECT count(*) FROM log_records WHERE topic = 'experiments' AND key = %s",
        user.encode(),
    )
    assert logged == [(1,)]

    # outcomes: what counts is on or after the exposure, impressions/clicks on the surface
    (exposed_at,) = _sql(
        settings,
        "SELECT at FROM experiment_exposures WHERE experiment = %s AND user_id = %s",
        key,
        user,
    )[0]
    after = exposed_at + timedelta(seconds=1)
    before = exposed_at - timedelta(hours=1)
    _activity(settings, [
        (user, "impression", "recommendations", after),
        (user, "impression", "recommendations", after),
        (user, "click", "recommendations", after),
        (user, "impression", "home", after),  # another surface: not counted
        (user, "click", "recommendations", before),  # before the exposure: not counted
        (user, "play_start", "detail", after),  # plays count on any surface
        (user, "completion", "", after),
    ])  # fmt: skip
    res = client.get(f"{URL}/{key}/results", headers=admin).json()
    by_name = {v["name"]: v for v in res["variants"]}
    counts = {v: list(served.values()).count(v) for v in ("control", "treatment")}
    assert {n: v["users"] for n, v in by_name.items()} == counts
    mine = by_name[served[user]]
    assert (mine["impressions"], mine["clicks"]) == (2, 1)
    assert (mine["play_start_users"], mine["completion_users"]) == (1, 1)
    assert mine["ctr"] == 0.5
    assert res["srm"] is False and res["status"] == "running"
    assert res["comparisons"][0]["variant"] == "treatment"
    assert set(res["comparisons"][0]["metrics"]) == {"ctr", "play_start_rate", "completion_rate"}
    assert "p_value_always_valid" in res["comparisons"][0]["metrics"]["completion_rate"]

    # running: the allocation is frozen, the description is not
    moved = _definition(variants=[{"name": "control", "weight": 90}, {"name": "treatment",
                                  "weight": 10, "params": {"model": "ease"}}])  # fmt: skip
    r = client.put(f"{URL}/{key}", json=moved, headers=admin)
    assert r.status_code == 409 and r.json()["field"] == "variants", r.text
    r = client.put(f"{URL}/{key}", json=_definition(description="now with notes"), headers=admin)
    assert r.status_code == 202 and r.json()["version"] == 2, r.text
    assert client.post(f"{URL}/{key}/start", headers=admin).status_code == 409

    # one experiment per surface
    r = client.put(f"{URL}/recs-rp3", json=_definition(), headers=admin)
    assert r.status_code == 202
    r = client.post(f"{URL}/recs-rp3/start", headers=admin)
    assert r.status_code == 409 and r.json()["field"] == "surface"

    page = client.get(URL, params={"limit": 1}, headers=admin).json()
    assert [e["key"] for e in page["items"]] == ["recs-ease"] and page["next_cursor"]
    rest = client.get(URL, params={"cursor": page["next_cursor"]}, headers=admin).json()
    assert [e["key"] for e in rest["items"]] == ["recs-rp3"] and rest["next_cursor"] is None
    running = client.get(URL, params={"status": "running"}, headers=admin).json()
    assert [e["key"] for e in running["items"]] == ["recs-ease"]
    assert client.get(URL, params={"status": "bogus"}, headers=admin).json()["field"] == "status"

    # stopped: final, and nobody is assigned any more
    r = client.post(f"{URL}/{key}/stop", json={"reason": "done"}, headers=admin)
    assert r.status_code == 202 and r.json()["confirmed"], r.text
    assert _assign(client, user, "recommendations") is None
    got = client.get(f"{URL}/{key}", headers=admin).json()
    assert got["status"] == "stopped" and got["stop_reason"] == "done"
    assert client.post(f"{URL}/{key}/start", headers=admin).status_code == 409
    assert client.post(f"{URL}/{key}/stop", headers=admin).status_code == 409
    res = client.get(f"{URL}/{key}/results", headers=admin).json()
    assert sum(v["users"] for v in res["variants"]) == len(users)


def test_sample_ratio_mismatch_flags_and_stops_once(
    client: TestClient, admin: dict[str, str], settings: Settings
) -> None:
    key = "home-rows"
    _define_and_start(client, admin, key, surface="home")
    # only users the hash puts in control come back: 60 control, 10 treatment
    control = [u for u in (f"c-{i}" for i in range(400)) if variant_index(key, u, [50, 50]) == 0]
    treatment = [u for u in (f"t-{i}" for i in range(400)) if variant_index(key, u, [50, 50]) == 1]
    for u in control[:60] + treatment[:10]:
        a = _assign(client, u, "home")
        assert a is not None
    _drain(client)
    _wait_exposures(settings, key, 70)

    r = client.get(f"{URL}/{key}/results", headers=admin)
    res = r.json()
    assert res["srm"] is True and res["srm_test"]["p_value"] < 0.001
    assert res["stopped_now"] is True and res["status"] == "stopped"
    token = r.headers["X-Consistency-Token"]
    got = client.get(f"{URL}/{key}", headers={**admin, "X-Consistency-Token": token}).json()
    assert got["status"] == "stopped" and got["stop_reason"] == "sample ratio mismatch"
    assert _assign(client, control[0], "home") is None

    again = client.get(f"{URL}/{key}/results", headers=admin).json()
    assert again["srm"] is True and again["stopped_now"] is False
    stops = _sql(
        settings,
        "SELECT count(*) FROM log_records WHERE topic = 'experiments' AND key = %s",
        key.encode(),
    )
    assert stops == [(3,)]  # set, start, one stop


def test_assign_gives_up_quietly_when_the_store_is_slow(
    client: TestClient, admin: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    import api.experiment_assignment as experiments

    _define_and_start(client, admin, "slow-store")
    c = client.app.state.mgw  # type: ignore[attr-defined]
    experiments.forget_running(c.stores.pg)
    saved = experiments.ASSIGN_BUDGET_S
    experiments.ASSIGN_BUDGET_S = 0.000001  # the first load cannot finish in time
    try:
        with caplog.at_level("WARNING", logger="mgw.experiments"):
            assert _assign(client, "someone", "recommendations") is None
        assert "served without an experiment" in caplog.text
    finally:
        experiments.ASSIGN_BUDGET_S = saved
    deadline = time.monotonic() + 5  # the load carried on: soon the cache serves
    while _assign(client, "someone", "recommendations") is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _drain(client)


def test_exposure_at_is_the_serve_time(client: TestClient, admin: dict[str, str],
                                       settings: Settings) -> None:  # fmt: skip
    _define_and_start(client, admin, "timing")
    t0 = datetime.now(UTC)
    assert _assign(client, "u-timing", "recommendations") is not None
    _drain(client)
    _wait_exposures(settings, "timing", 1)
    (at,) = _sql(settings, "SELECT at FROM experiment_exposures WHERE experiment = 'timing'")[0]
    assert t0 - timedelta(seconds=1) <= at <= datetime.now(UTC)
