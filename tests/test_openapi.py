"""The OpenAPI document: valid 3.1, one operation for every route, derived from what the
handlers read, and true to how the running app answers."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate
from starlette.routing import Route
from starlette.testclient import TestClient

from api.openapi import _PATH_PARAM, _source, analyse
from api.responses import VALIDATE_ENV, Body, ResponseMismatch, respond


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


#: operations whose JSON success body has no model yet (the handler answers a bare
#: JSONResponse, not respond(Model, ...)): the next ones to describe. This list only
#: shrinks: a described operation that loses its schema fails, and so does one listed
#: here that has a schema now.
UNDESCRIBED = {
    "DELETE /v1/admin/users/{id}/roles/{role}",
    "GET /.well-known/jwks.json",
    "GET /.well-known/oauth-authorization-server",
    "GET /.well-known/oauth-protected-resource/mcp",
    "GET /.well-known/openid-configuration",
    "GET /admin/health.json",
    "GET /oauth/userinfo",
    "GET /openapi.json",
    "GET /v1/admin/audit",
    "GET /v1/admin/dead-letters",
    "GET /v1/admin/dead-letters/{letter_id}",
    "GET /v1/admin/dlq",
    "GET /v1/admin/dlq/{letter_id}",
    "GET /v1/admin/experiments",
    "GET /v1/admin/experiments/{key}",
    "GET /v1/admin/experiments/{key}/results",
    "GET /v1/admin/moderation",
    "GET /v1/admin/moderation/{content_id}",
    "GET /v1/admin/ranking/profiles",
    "GET /v1/admin/ranking/profiles/{name}",
    "GET /v1/admin/rate-limits",
    "GET /v1/admin/rebuilds",
    "GET /v1/admin/rebuilds/{rebuild_id}",
    "GET /v1/admin/search/analytics",
    "GET /v1/admin/users",
    "GET /v1/admin/users/{id}",
    "GET /v1/auth/external/{provider}/callback",
    "GET /v1/auth/external/{provider}/start",
    "GET /v1/me/commands/{command_id}",
    "GET /v1/me/mfa",
    "GET /v1/me/notifications",
    "GET /v1/me/notifications/preferences",
    "GET /v1/me/profiles",
    "GET /v1/me/profiles/{profile_id}",
    "PATCH /v1/me/profiles/{profile_id}",
    "POST /oauth/device/approve",
    "POST /oauth/device/code",
    "POST /oauth/revoke",
    "POST /oauth/token",
    "POST /v1/admin/users/{id}/lock",
    "POST /v1/admin/users/{id}/unlock",
    "POST /v1/auth/external/{provider}/callback",
    "POST /v1/me/mfa/backup-codes",
    "POST /v1/me/mfa/disable",
    "POST /v1/me/mfa/totp",
    "POST /v1/me/mfa/totp/confirm",
    "POST /v1/me/profiles",
    "POST /v1/webhooks/{platform}",
    "PUT /v1/admin/users/{id}/roles/{role}",
    "PUT /v1/me/profiles/{profile_id}/parental-controls",
}


def _undescribed(doc: dict[str, Any]) -> set[str]:
    out = set()
    for (path, method), op in _operations(doc).items():
        for status, r in op["responses"].items():
            json_body = r.get("content", {}).get("application/json")
            if status.startswith("2") and json_body is not None and json_body["schema"] == {}:
                out.add(f"{method} {path}")
    return out


def test_every_json_success_body_has_a_schema_but_the_shrinking_list(client: TestClient) -> None:
    doc = _doc(client)
    missing = _undescribed(doc)
    assert missing - UNDESCRIBED == set(), "these lost their response schema (or are new)"
    ops = {f"{m} {p}" for p, m in _operations(doc)}
    assert (UNDESCRIBED & ops) - missing == set(), "described now: remove from UNDESCRIBED"
    described = len(ops) - len(missing)
    print(f"{described} of {len(ops)} operations describe their success body")
    assert described >= 80, described


def test_response_bodies_are_the_models_the_handlers_respond_with(client: TestClient) -> None:
    doc = _doc(client)
    ops, schemas = _operations(doc), doc["components"]["schemas"]

    def body(path: str, method: str, status: str = "200") -> dict[str, Any]:
        content = ops[(path, method)]["responses"][status]["content"]
        schema: dict[str, Any] = content["application/json"]["schema"]
        return schema

    assert body("/v1/search", "GET") == {"$ref": "#/components/schemas/SearchPage"}
    search = schemas["SearchPage"]
    assert search["allOf"] == [{"$ref": "#/components/schemas/Page"}]
    assert {"items", "next_cursor", "facets", "did_you_mean"} <= set(search["required"])
    assert search["additionalProperties"] is False
    assert "explain" not in schemas["SearchHit"]["required"]  # only with explain=true
    page = schemas["Page"]
    assert set(page["required"]) == {"items", "next_cursor"}
    for path in ("/v1/me/watchlist", "/v1/me/up-next", "/v1/me/continue-watching",
                 "/v1/catalog/new", "/v1/content/{content_id}/availability"):  # fmt: skip
        name = body(path, "GET")["$ref"].rsplit("/", 1)[1]
        assert schemas[name]["allOf"] == [{"$ref": "#/components/schemas/Page"}], path
    # a command's 202 is the fixed Accepted shape; a library write answers its outcome
    assert body("/v1/playback/events", "POST", "202") == {"$ref": "#/components/schemas/Accepted"}
    assert schemas["Accepted"]["required"] == ["position"]
    assert body("/v1/me/watchlist", "POST") == {"$ref": "#/components/schemas/OpOutcome"}
    # a status given positionally is the status documented
    assert "202" in ops[("/v1/playback/sessions/{session_id}/heartbeat", "POST")]["responses"]
    # a body that is not JSON has no JSON schema
    assert "application/json" not in ops[("/metrics", "GET")]["responses"]["200"]["content"]


def test_respond_checks_a_body_against_its_model_only_while_validating(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Out(Body):
        n: int

    monkeypatch.setenv(VALIDATE_ENV, "1")  # as the whole test session runs
    assert respond(Out, {"n": 1}, 201).body == b'{"n":1}'
    with pytest.raises(ResponseMismatch, match="Out"):
        respond(Out, {"n": "one"})
    with pytest.raises(ResponseMismatch):
        respond(Out, {"n": 1, "undocumented": True})
    monkeypatch.setenv(VALIDATE_ENV, "0")  # serving: the body is only dumped
    assert respond(Out, {"n": "one"}).status_code == 200
