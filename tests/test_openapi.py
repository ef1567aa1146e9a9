"""The OpenAPI document: valid 3.1, one operation for every route, derived from what the
handlers read, and true to how the running app answers."""

from __future__ import annotations

from typing import Any

from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from api.openapi import _PATH_PARAM, _source, analyse


def _doc(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200, r.text
    doc: dict[str, Any] = r.json()
    return doc


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(p, m.upper()): op for p, ops in doc["paths"].items() for m, op in ops.items()}


def test_the_document_is_valid_openapi_3_1_and_cached_by_etag(client: TestClient) -> None:
    r = client.get("/openapi.json")
    doc = r.json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the 3.1 schema
    again = client.get("/openapi.json", headers={"If-None-Match": r.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert "public" in r.headers["Cache-Control"]
    schemes = doc["components"]["securitySchemes"]
    assert {"bearer", "apiKey", "oauth2"} <= set(schemes)
    flows = schemes["oauth2"]["flows"]
    assert flows["authorizationCode"]["tokenUrl"] == "/oauth/token"
    assert "library" in flows["password"]["scopes"]


def test_every_route_is_an_operation_whose_handler_could_be_read(client: TestClient) -> None:
    ops = _operations(_doc(client))
    routes = [
        r for r in client.app.routes  # type: ignore[attr-defined]
        if isinstance(r, Route) and r.include_in_schema  # /docs itself is not part of the API
    ]  # fmt: skip
    missing = []
    for r in routes:
        assert _source(r.endpoint) is not None, f"{r.path}: handler source not readable"
        for m in r.methods - {"HEAD"}:
            path = _PATH_PARAM.sub(r"{\1}", r.path)  # {content_id:path} -> {content_id}
            if (path, m) not in ops:
                missing.append((path, m))
    assert missing == []
    ids = [op["operationId"] for op in ops.values()]
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    assert len(ops) >= 120


def test_bodies_are_the_models_the_handlers_validate_with(client: TestClient) -> None:
    doc = _doc(client)
    ops = _operations(doc)
    body = ops[("/v1/playback/events", "POST")]["requestBody"]
    ref = body["content"]["application/json"]["schema"]["$ref"]
    schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(schema["required"]) >= {"content_id", "device_id", "kind", "position_s"}
    assert schema["properties"]["kind"]["enum"] == ["start", "progress", "stop"]
    assert schema["additionalProperties"] is False
    for r in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(r, Route) and analyse(r.endpoint).body is not None:
            for m in r.methods - {"HEAD", "GET"}:
                assert "requestBody" in ops[(_PATH_PARAM.sub(r"{\1}", r.path), m)], r.path
    token = ops[("/oauth/token", "POST")]["requestBody"]["content"]
    assert "grant_type" in token["application/x-www-form-urlencoded"]["schema"]["required"]


def test_documented_bounds_are_the_ones_enforced(client: TestClient, admin: dict[str, str]) -> None:
    """Every bounded integer query parameter of a GET without path parameters: one past its
    maximum is refused with 422 naming it, the maximum itself is not refused for it."""
    ops = _operations(_doc(client))
    cw = {p["name"]: p for p in ops[("/v1/me/continue-watching", "GET")]["parameters"]
          if "name" in p}  # fmt: skip
    assert cw["limit"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 100,
                                     "default": 20}  # fmt: skip
    checked = 0
    for (path, method), op in sorted(ops.items()):
        if method != "GET" or "{" in path:
            continue
        for p in op["parameters"]:
            hi = p.get("schema", {}).get("maximum")
            if p.get("in") != "query" or hi is None:
                continue
            r = client.get(path, params={p["name"]: hi + 1}, headers=admin)
            assert r.status_code == 422, (path, p["name"], r.status_code, r.text)
            assert r.json().get("field") == p["name"], (path, r.text)
            ok = client.get(path, params={p["name"]: hi}, headers=admin)
            assert ok.status_code != 422 or ok.json().get("field") != p["name"], (path, ok.text)
            checked += 1
    assert checked >= 15, checked


def test_a_scoped_operation_refuses_a_caller_without_a_token(client: TestClient) -> None:
    ops = _operations(_doc(client))
    checked = 0
    for (path, method), op in sorted(ops.items()):
        if method != "GET" or "{" in path or not op.get("security"):
            continue
        r = client.get(path)
        assert r.status_code == 401, (path, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
        checked += 1
    assert checked >= 20, checked
