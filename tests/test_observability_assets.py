"""The dashboard and the alert rules (ops/grafana, ops/prometheus) against the metrics the
code really exposes (core/metrics.py), and those metrics end to end through /metrics.

promtool comes from Debian's ``prometheus`` package (``make prometheus``, part of ``make
test``). Grafana publishes no dashboard schema usable offline, so the dashboard is checked
against tests/fixtures/grafana-dashboard.schema.json, a small one covering what an import
needs.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from api.http_metrics import HttpMetrics
from core import metrics
from core.metrics import HTTP_REQUESTS, HTTP_SECONDS

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "ops/grafana/media-gateway.json"
SCHEMA = ROOT / "tests/fixtures/grafana-dashboard.schema.json"
PROMETHEUS = ROOT / "ops/prometheus"
#: series Prometheus writes itself, not the app
PROMETHEUS_OWN = {"up"}


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is missing: run `make prometheus` (Debian's prometheus package)"
    return subprocess.run(
        [tool, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120, check=False
    )


# -- what core/metrics.py exposes ---------------------------------------------------------


def exposed_names() -> set[str]:
    """Every series name the registry can expose, with the suffixes prometheus-client
    adds: ``_total`` (and ``_created``) for counters, ``_bucket``/``_sum``/``_count`` for
    histograms. Taken from the metric objects, not a scrape: a labelled metric nobody has
    counted into yet exposes no sample."""
    names: set[str] = set()
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        for family in value.describe():
            base = family.name
            if family.type == "counter":
                names |= {f"{base}_total", f"{base}_created"}
            elif family.type == "histogram":
                names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count", f"{base}_created"}
            else:
                names.add(base)
    return names


_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label
    matchers, ranges, grouping clauses, function names and keywords are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    # a name starts after anything but a name or number character (not the m of 5m)
    for m in re.finditer(r"(?<![A-Za-z0-9_:.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        word = m.group(0)
        if text[m.end() :].lstrip().startswith("("):
            continue  # a function or aggregation
        if word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def test_metric_names_are_parsed_from_promql() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, route) (rate(mgw_http_request_seconds_bucket"
        '{job=~"$job", status=~"5.."}[$__rate_interval]))) / on (job) group_left '
        "sum without (instance) (up offset 5m) > bool 0"
    )
    assert metric_names(expr) == {"mgw_http_request_seconds_bucket", "up"}
    assert "mgw_records_applied_total" in exposed_names()
    assert "mgw_records_applied" not in exposed_names()
    assert {"mgw_search_seconds_bucket", "mgw_projector_lag_seconds"} <= exposed_names()


# -- the dashboard --------------------------------------------------------------------------


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def _panels(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for p in panels:
        out.append(p)
        out += _panels(p.get("panels", []))
    return out


def _dashboard_exprs() -> list[str]:
    d = _dashboard()
    exprs = [t["expr"] for p in _panels(d["panels"]) for t in p.get("targets", [])]
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if isinstance(q, str) and q:
            # label_values(<selector>, label): the selector is PromQL
            inner = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
            exprs.append(inner.group(1) if inner else q)
    return exprs


def test_dashboard_validates_against_the_schema() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(_dashboard())


def test_the_schema_refuses_what_grafana_would() -> None:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    broken = _dashboard()
    panel = next(p for p in broken["panels"] if p["type"] != "row")
    del panel["targets"][0]["expr"]
    assert not validator.is_valid(broken)
    old = {**_dashboard(), "schemaVersion": 16}
    assert not validator.is_valid(old)


def test_dashboard_has_the_panels_and_one_datasource_input() -> None:
    d = _dashboard()
    assert [i["name"] for i in d["__inputs"]] == ["DS_PROMETHEUS"]
    for p in _panels(d["panels"]):
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${DS_PROMETHEUS}", p["title"]
    used = set().union(*(metric_names(e) for e in _dashboard_exprs()))
    wanted = {
        "mgw_http_requests_total",  # requests/s, 5xx
        "mgw_http_request_seconds_bucket",  # p50/p95/p99 by route
        "mgw_records_applied_total",  # projector throughput
        "mgw_projector_lag_seconds",
        "mgw_projector_lag_records",
        "mgw_dead_letters_total",
        "mgw_search_seconds_bucket",
        "mgw_signins_total",
        "mgw_realtime_sockets",
    }
    assert wanted <= used, wanted - used


def test_every_dashboard_expr_names_a_metric_the_code_exposes() -> None:
    known = exposed_names()
    for expr in _dashboard_exprs():
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert names <= known, f"{sorted(names - known)} in {expr!r}: not in core/metrics.py"


# -- the alert rules ----------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    r = _promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _promtool("check", "config", "prometheus.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    # among them: the lag alert fires after 5 minutes of lag over 5 s, and not before
    r = _promtool("test", "rules", "alerts_test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


def test_every_alert_is_labelled_annotated_and_names_real_metrics() -> None:
    rules = [
        rule
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    anchors = {r["alert"]: r["annotations"]["runbook_url"] for r in rules}
    assert sorted(anchors.values()) == sorted(
        f"docs/runbook.md#{a}"
        for a in ("lag", "dead-letters", "errors", "dependency-down", "target-down")
    )
    known = exposed_names() | PROMETHEUS_OWN
    for rule in rules:
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert metric_names(rule["expr"]) <= known, rule["alert"]


# -- end to end -----------------------------------------------------------------------------


def _samples(text: str, name: str) -> list[dict[str, str]]:
    return [
        s.labels
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_metrics_carry_route_templates_and_lag_in_seconds(
    client: TestClient, admin: dict[str, str]
) -> None:
    movie = {"title": "Toy Story", "year": 1995, "kind": "movie", "runtime_min": 81,
             "genres": ["Animation"], "external_ids": {"imdb": "tt0114709"}}  # fmt: skip
    r = client.post("/v1/content", json=movie, headers=admin)
    assert r.status_code == 202, r.text
    content_id = r.json()["content_id"]
    got = client.get(
        f"/v1/content/{content_id}", headers={"X-Consistency-Token": r.json()["position"]}
    )
    assert got.status_code == 200, got.text
    missing = str(uuid.uuid4())
    assert client.get(f"/v1/content/{missing}").status_code == 404
    assert client.get("/no/such/path").status_code == 404
    assert client.get("/v1/search", params={"q": "toy"}).status_code == 200
    refused = client.post(
        "/oauth/token",
        data={"grant_type": "password", "client_id": "mgw-app", "username": "nobody@example.com",
              "password": "not this one"},
    )  # fmt: skip
    assert refused.status_code in (400, 401), refused.text

    text = client.get("/metrics").text
    requests = _samples(text, "mgw_http_requests_total")
    content = [s for s in requests if s["route"] == "/v1/content/{content_id}"]
    assert {"200", "404"} <= {s["status"] for s in content if s["method"] == "GET"}
    assert any(s["route"] == "unmatched" for s in requests)
    for raw in (content_id, missing, "/no/such/path"):
        assert raw not in text, f"a raw path reached the labels: {raw}"
    assert _samples(text, "mgw_http_request_seconds_count")

    lag = _samples(text, "mgw_projector_lag_seconds")
    assert {"projector": "catalog", "topic": "catalog.content"} in lag
    assert {"dependency": "postgres"} in _samples(text, "mgw_dependency_up")
    assert {"kind": "search"} in _samples(text, "mgw_search_seconds_count")
    outcomes = {(s["grant"], s["outcome"]) for s in _samples(text, "mgw_signins_total")}
    assert {("password", "issued"), ("password", "invalid_grant")} <= outcomes


def test_http_metrics_time_streams_to_their_end_and_leave_websockets_alone() -> None:
    async def slow(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for _ in range(3):
                await asyncio.sleep(0.05)
                yield b"x"

        return StreamingResponse(body())

    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    route = f"/obs-test/{uuid.uuid4().hex[:8]}/{{n}}"  # unique: the registry is global
    app = Starlette(
        routes=[Route(route, slow), WebSocketRoute("/obs-test/ws", echo)],
        middleware=[Middleware(HttpMetrics)],
    )
    with TestClient(app) as c:
        assert c.get(route.replace("{n}", "7")).text == "xxx"
        with c.websocket_connect("/obs-test/ws") as ws:
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
    counted = [
        (s.labels, s.value)
        for m in HTTP_REQUESTS.collect()
        for s in m.samples
        if s.name == "mgw_http_requests_total"
    ]
    assert ({"method": "GET", "route": route, "status": "200"}, 1.0) in counted
    sums = {
        s.name: s.value
        for m in HTTP_SECONDS.collect()
        for s in m.samples
        if s.labels.get("route") == route
    }
    assert sums["mgw_http_request_seconds_count"] == 1
    assert sums["mgw_http_request_seconds_sum"] >= 0.15  # the whole body, not its headers
    assert all(labels["route"] != "/obs-test/ws" for labels, _ in counted)
