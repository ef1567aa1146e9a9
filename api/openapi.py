"""The OpenAPI 3.1 document, derived from the routes and the code of their handlers.

One source of truth: a handler already says what it reads, and this module reads the
handler. ``read_json(request, Model)`` is the request body (the pydantic model's own JSON
schema), ``int_param(request, "limit", 20, 1, 100)`` a bounded integer parameter,
``query_params.get("q")`` a string parameter, ``require(request, "library")`` the scope it
needs, ``wait_for_token`` the consistency-token header, ``Problem(404, ...)`` a documented
error. Helpers in the handler's module that it calls with the request are read too. So a
parameter added to a handler is in the document without a second declaration, and a test
fails for a route this cannot describe (tests/test_openapi.py).
"""

from __future__ import annotations

import ast
import hashlib
import inspect
import json
import re
import textwrap
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from api.consistency import HEADER as CONSISTENCY_HEADER
from api.http_cache import PREFIXES as CACHED_PREFIXES
from api.responses import Accepted, schema_of

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
_PATH_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")
_MEDIA = {
    "JSONResponse": "application/json",
    "HTMLResponse": "text/html",
    "PlainTextResponse": "text/plain",
}
#: helpers that read the request on a handler's behalf, by name
_READERS = {"read_json", "int_param", "read_body", "require", "wait_for_token"}


@dataclass
class Param:
    name: str
    schema: dict[str, Any]
    required: bool = False


@dataclass
class Operation:
    """What one handler reads and may answer, as found in its code."""

    summary: str = ""
    description: str = ""
    scopes: list[str] = field(default_factory=list)
    optional_auth: bool = False
    body: type[BaseModel] | None = None
    body_optional: bool = False
    raw_body: bool = False
    form: dict[str, Any] | None = None
    form_fields: dict[str, bool] | None = None  # name -> always required
    query: dict[str, Param] = field(default_factory=dict)
    consistency: bool = False
    statuses: set[int] = field(default_factory=set)
    success: int = 200
    media: set[str] = field(default_factory=set)
    redirects: bool = False
    #: success status -> the models ``respond(Model, ...)`` answers it with
    models: dict[int, list[type[BaseModel]]] = field(default_factory=dict)
    #: success statuses also answered by a bare ``JSONResponse`` (no model: no schema)
    untyped: set[int] = field(default_factory=set)


def _literal(node: ast.AST | None) -> Any:
    try:
        return ast.literal_eval(node) if node is not None else None
    except ValueError:
        return None


def _arg(call: ast.Call, i: int, name: str) -> ast.AST | None:
    if len(call.args) > i:
        return call.args[i]
    return next((k.value for k in call.keywords if k.arg == name), None)


def _callee(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _passes_request(call: ast.Call) -> bool:
    return any(isinstance(a, ast.Name) and a.id == "request" for a in call.args)


def _source(fn: Callable[..., Any]) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None


def _read(fn: Callable[..., Any], op: Operation, depth: int) -> None:
    tree = _source(fn)
    if tree is None:
        return
    env = getattr(fn, "__globals__", {})
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _callee(node)
        if name == "require":
            scope = _literal(_arg(node, 1, "scope"))
            if isinstance(scope, str) and scope not in op.scopes:
                op.scopes.append(scope)
            op.statuses |= {401, 403}
        elif name in ("authenticate", "optional_principal"):
            op.optional_auth = True
        elif name == "read_json":
            model = _arg(node, 1, "model")
            cls = env.get(model.id) if isinstance(model, ast.Name) else None
            if isinstance(cls, type) and issubclass(cls, BaseModel):
                op.body = cls
                op.body_optional = bool(_literal(_arg(node, 99, "optional")))
            op.statuses |= {400, 415, 422}
        elif name == "read_params":  # OAuth: form fields, read by name below
            op.form_fields = op.form_fields or {}
            op.statuses.add(400)
        elif name == "need" and op.form_fields is not None:
            fname = _literal(_arg(node, 1, "name"))
            if isinstance(fname, str):
                op.form_fields[fname] = True
        elif name == "get" and _on_name(node, "params") and op.form_fields is not None:
            fname = _literal(_arg(node, 0, "key"))
            if isinstance(fname, str):
                op.form_fields.setdefault(fname, False)
        elif name == "read_body":
            op.raw_body = True
            op.statuses |= {400, 415, 422}
        elif name == "int_param":
            pname, default = _literal(_arg(node, 1, "name")), _literal(_arg(node, 2, "default"))
            lo, hi = _literal(_arg(node, 3, "lo")), _literal(_arg(node, 4, "hi"))
            if isinstance(pname, str):
                schema: dict[str, Any] = {"type": "integer"}
                if isinstance(lo, int):
                    schema["minimum"] = lo
                if isinstance(hi, int):
                    schema["maximum"] = hi
                if isinstance(default, int):
                    schema["default"] = default
                op.query[pname] = Param(pname, schema)
                op.statuses.add(422)
        elif name == "multi_items" and _is_query_params(node):
            # a handler that reads the whole query checks it against its module's _PARAMS
            for pname in sorted(env.get("_PARAMS", ())):
                op.query.setdefault(pname, Param(pname, {"type": "string"}))
        elif name in ("get", "getlist") and _is_query(node):
            pname = _literal(_arg(node, 0, "key"))
            if isinstance(pname, str) and pname not in op.query:
                schema = {"type": "string"}
                if name == "getlist":
                    schema = {"type": "array", "items": {"type": "string"}}
                default = _literal(_arg(node, 1, "default"))
                if isinstance(default, str):
                    schema["default"] = default
                op.query[pname] = Param(pname, schema)
        elif name == "wait_for_token":
            op.consistency = True
            op.statuses.add(503)
        elif name in ("Problem", "problem"):
            status = _literal(_arg(node, 0, "status"))
            if isinstance(status, int):
                op.statuses.add(status)
        elif name == "accepted":
            op.success = 202
            _model(op, 202, Accepted)
        elif name == "respond":
            model = _arg(node, 0, "model")
            cls = env.get(model.id) if isinstance(model, ast.Name) else None
            status = _literal(_arg(node, 2, "status"))
            status = status if isinstance(status, int) else 200
            if 200 <= status < 300:
                op.success = status
                op.media.add("application/json")
                if isinstance(cls, type) and issubclass(cls, BaseModel):
                    _model(op, status, cls)
                else:
                    op.untyped.add(status)
        elif name in _MEDIA or name == "Response":
            status = _literal(_arg(node, 99, "status_code"))
            if isinstance(status, int) and 200 <= status < 300:
                op.success = status
            if name == "JSONResponse" and (status is None or 200 <= status < 300):
                op.untyped.add(status if isinstance(status, int) else 200)
            media = _MEDIA.get(name)
            if media is None:
                raw = _arg(node, 99, "media_type")
                media = env.get(raw.id) if isinstance(raw, ast.Name) else _literal(raw)
            if isinstance(media, str):
                op.media.add(media.split(";")[0])
        elif name == "RedirectResponse":
            op.redirects = True
        if depth > 0 and name not in _READERS:
            # helpers given the request read it for the handler; helpers of its own module
            # build its answers (pages, error statuses)
            helper = env.get(name)
            if inspect.isfunction(helper) and (
                helper.__module__ == fn.__module__
                or (_passes_request(node) and helper.__module__.startswith("api."))
            ):
                _read(helper, op, depth - 1)


def _model(op: Operation, status: int, model: type[BaseModel]) -> None:
    models = op.models.setdefault(status, [])
    if model not in models:
        models.append(model)


def response_schema(op: Operation, components: dict[str, Any]) -> dict[str, Any]:
    """The schema of ``op``'s success body: its model's (any of them when it answers
    several), or ``{}`` when some answer of that status has no model."""
    models = op.models.get(op.success, [])
    if not models or op.success in op.untyped:
        return {}
    refs = [schema_of(m, components) for m in models]
    return refs[0] if len(refs) == 1 else {"anyOf": refs}


def _on_name(call: ast.Call, name: str) -> bool:
    target = call.func.value if isinstance(call.func, ast.Attribute) else None
    return isinstance(target, ast.Name) and target.id == name


def _is_query_params(call: ast.Call) -> bool:
    target = call.func.value if isinstance(call.func, ast.Attribute) else None
    return isinstance(target, ast.Attribute) and target.attr == "query_params"


def _is_query(call: ast.Call) -> bool:
    """``request.query_params.get(..)`` or ``q.get(..)`` where q holds the query params."""
    target = call.func.value if isinstance(call.func, ast.Attribute) else None
    if isinstance(target, ast.Attribute):
        return target.attr == "query_params"
    return isinstance(target, ast.Name) and target.id in ("q", "query", "params")


def form_body(schema: dict[str, Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """For a protocol endpoint whose form fields are defined by an RFC and read as a
    mapping (OAuth's token endpoint): the schema its code cannot show."""

    def mark(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn.__openapi_form__ = schema  # type: ignore[attr-defined]
        return fn

    return mark


@cache
def analyse(fn: Callable[..., Any]) -> Operation:
    op = Operation()
    op.form = getattr(fn, "__openapi_form__", None)
    doc = inspect.getdoc(fn) or ""
    first, _, rest = doc.partition("\n\n")
    # a handler without a docstring is named for what it does: get_continue_watching
    op.summary = (
        " ".join(first.split())[:120] or fn.__name__.strip("_").replace("_", " ").capitalize()
    )
    op.description = rest.strip()
    _read(fn, op, depth=2)
    if op.form is None and op.form_fields:
        op.form = {
            "type": "object",
            "properties": {f: {"type": "string"} for f in sorted(op.form_fields)},
            "required": sorted(f for f, req in op.form_fields.items() if req),
        }
    return op


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[{}]", "", path).strip("/").replace("-", "_").split("/")
    return "_".join([method.lower(), *[w for w in words if w and w != "v1"]])


def _schema_of(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        components.setdefault(name, sub)
    components.setdefault(model.__name__, schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(
    method: str, path: str, tag: str, op: Operation, components: dict[str, Any]
) -> dict[str, Any]:
    params: list[dict[str, Any]] = [
        {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
        for n in _PATH_PARAM.findall(path)
    ]
    params += [
        {"name": p.name, "in": "query", "required": p.required, "schema": p.schema}
        for p in op.query.values()
    ]
    if op.consistency:
        params.append({"$ref": "#/components/parameters/ConsistencyToken"})
    out: dict[str, Any] = {
        "operationId": _operation_id(method, path),
        "tags": [tag],
        "summary": op.summary or f"{method} {path}",
        "parameters": params,
    }
    if op.description:
        out["description"] = op.description
    if op.body is not None:
        out["requestBody"] = {
            "required": not op.body_optional,
            "content": {"application/json": {"schema": _schema_of(op.body, components)}},
        }
    elif op.form is not None:
        out["requestBody"] = {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": op.form},
                        "application/json": {"schema": op.form}},
        }  # fmt: skip
    elif op.raw_body and method in ("POST", "PUT", "PATCH"):
        out["requestBody"] = {
            "required": False,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                "application/x-www-form-urlencoded": {"schema": {"type": "object"}},
            },
        }
    responses: dict[str, Any] = {
        str(op.success): {
            "description": "Accepted: applied once the projection catches up"
            if op.success == 202
            else "OK",
            "headers": {"RateLimit-Limit": {"$ref": "#/components/headers/RateLimit-Limit"},
                        "RateLimit-Remaining": {"$ref": "#/components/headers/RateLimit-Remaining"},
                        "RateLimit-Reset": {"$ref": "#/components/headers/RateLimit-Reset"}},
        }
    }  # fmt: skip
    if op.success == 202:
        responses["202"]["headers"]["X-Consistency-Token"] = {
            "$ref": "#/components/headers/X-Consistency-Token"
        }
    if op.success != 204:
        media = sorted(op.media) or ["application/json"]
        body = response_schema(op, components)
        responses[str(op.success)]["content"] = {
            m: {"schema": body if m == "application/json" else {}} for m in media
        }
    if method == "GET" and path.startswith(CACHED_PREFIXES):  # api/http_cache.py
        params.append({"$ref": "#/components/parameters/IfNoneMatch"})
        ok = responses[str(op.success)]["headers"]
        ok["ETag"] = {"$ref": "#/components/headers/ETag"}
        ok["Cache-Control"] = {"$ref": "#/components/headers/Cache-Control"}
        responses["304"] = {
            "description": "Not Modified: the ETag sent in If-None-Match is current",
            "headers": {"ETag": {"$ref": "#/components/headers/ETag"}},
        }
    if op.redirects:
        responses["302"] = {"description": "Found: continue at the Location header"}
    for status in sorted(op.statuses | {429}):
        responses[str(status)] = {"$ref": f"#/components/responses/E{status}"}
    # Statuses a handler's code does not show (a helper in another layer, the framework's
    # 404/405) are problem details too; OAuth endpoints answer RFC 6749 error objects and
    # pages answer HTML.
    responses["default"] = {"$ref": "#/components/responses/Error"}
    out["responses"] = responses
    if op.scopes:
        out["security"] = [
            {"bearer": op.scopes},
            {"apiKey": op.scopes},
            {"oauth2": op.scopes},
        ]
    elif not op.optional_auth:
        out["security"] = []
    return out


def _deprecated(operation: dict[str, Any], dep: Any) -> None:
    """A moved path (api/deprecation.py): deprecated, with its headers on every answer."""
    successor = _PATH_PARAM.sub(r"{\1}", dep.successor)
    operation["deprecated"] = True
    operation["description"] = (
        f"Deprecated since {dep.since:%Y-%m-%d}: use {successor}. Answers until"
        f" {dep.sunset:%Y-%m-%d}, with Deprecation, Sunset and a successor-version Link."
        + ("\n\n" + operation["description"] if operation.get("description") else "")
    )
    operation["operationId"] += "_deprecated"
    headers = {h: {"$ref": f"#/components/headers/{h}"} for h in ("Deprecation", "Sunset", "Link")}
    for status, response in operation["responses"].items():
        if status.startswith("2"):
            response.setdefault("headers", {}).update(headers)


def _routes(routes: Iterable[BaseRoute]) -> Iterable[tuple[str, str, Callable[..., Any]]]:
    for r in routes:
        if isinstance(r, Route) and r.methods and r.include_in_schema:
            for m in sorted(r.methods - {"HEAD"}):
                yield r.path, m, r.endpoint


def build(
    routes: Iterable[BaseRoute], *, version: str, server: str | None = None
) -> dict[str, Any]:
    components: dict[str, Any] = {"Problem": _PROBLEM_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    scopes: set[str] = set()
    tags: dict[str, str] = {}
    for path, method, endpoint in _routes(routes):
        fn = inspect.unwrap(endpoint)  # a moved path's wrapper: document the handler
        op = analyse(fn)
        scopes |= set(op.scopes)
        tag = fn.__module__.rsplit(".", 1)[-1].replace("_", " ")
        module_doc = inspect.getdoc(inspect.getmodule(fn)) or ""
        tags.setdefault(tag, " ".join(module_doc.partition("\n\n")[0].split()))
        operation = _operation(method, path, tag, op, components)
        dep = getattr(endpoint, "__deprecation__", None)
        if dep is not None:
            _deprecated(operation, dep)
        paths.setdefault(_PATH_PARAM.sub(r"{\1}", path), {})[method.lower()] = operation
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Media Gateway API",
            "version": version,
            "description": (
                "One catalog over eight streaming platforms: search, where to watch,"
                " recommendations, a watchlist and playback position synced across devices,"
                " sign-in for users and devices. Errors are RFC 9457 problem details naming the"
                " field at fault. Writes answer 202 with an X-Consistency-Token; send it back on"
                " a read to see your write. The WebSocket protocol at /v1/ws is described in"
                " docs/realtime.md."
            ),
            "license": {"name": "Proprietary", "identifier": "LicenseRef-mgw"},
        },
        "tags": [{"name": t, "description": d} for t, d in sorted(tags.items())],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "responses": {
                **{f"E{s}": _problem_response(s) for s in _ALL_STATUSES},
                "Error": {
                    "description": "An error: problem details (OAuth endpoints: an RFC 6749"
                    " error object; pages: HTML)",
                    "content": {
                        "application/problem+json": {"schema": PROBLEM_REF},
                        "application/json": {"schema": {"type": "object"}},
                        "text/html": {"schema": {"type": "string"}},
                    },
                },
            },
            "parameters": {
                "ConsistencyToken": {
                    "name": CONSISTENCY_HEADER,
                    "in": "header",
                    "required": False,
                    "description": "The token a write returned: the read waits until it"
                    " reflects that write (503 with Retry-After if it cannot in time).",
                    "schema": {"type": "string", "maxLength": 512},
                },
                "IfNoneMatch": {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "description": "The ETag of a copy you hold: 304 with no body if current.",
                    "schema": {"type": "string"},
                },
            },
            "headers": _HEADERS,
            "securitySchemes": _security(sorted(scopes)),
        },
    }
    if server:
        doc["servers"] = [{"url": server}]
    return doc


_ALL_STATUSES = (400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 423, 428, 429, 500, 502, 503)

_PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "field": {"type": "string", "description": "the request field at fault"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

_HEADERS: dict[str, Any] = {
    "ETag": {"schema": {"type": "string"}, "description": "a hash of this body"},
    "Cache-Control": {
        "schema": {"type": "string"},
        "description": "public (anonymous) or private, max-age=60",
    },
    "RateLimit-Limit": {"schema": {"type": "integer"}, "description": "requests per window"},
    "RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "left in the window"},
    "RateLimit-Reset": {"schema": {"type": "integer"}, "description": "seconds to the reset"},
    "Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"},
    "Deprecation": {
        "schema": {"type": "string", "pattern": "^@[0-9]+$"},
        "description": "RFC 9745: this path is deprecated since @<unix seconds>",
    },
    "Sunset": {
        "schema": {"type": "string"},
        "description": "RFC 8594: the HTTP date after which this path may stop answering",
    },
    "Link": {
        "schema": {"type": "string"},
        "description": 'the successor: <path>; rel="successor-version"',
    },
    "X-Consistency-Token": {
        "schema": {"type": "string"},
        "description": "send back on a read to see this write",
    },
}


def _problem_response(status: int) -> dict[str, Any]:
    from http import HTTPStatus

    out: dict[str, Any] = {
        "description": HTTPStatus(status).phrase
        + " (problem details; from OAuth endpoints an RFC 6749 error object; from pages HTML)",
        "content": {
            "application/problem+json": {"schema": PROBLEM_REF},
            "application/json": {"schema": {"type": "object"}},
            "text/html": {"schema": {"type": "string"}},
        },
    }
    if status in (429, 503):
        out["headers"] = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}
    return out


def _security(scopes: list[str]) -> dict[str, Any]:
    named = {s: f"the {s} scope" for s in scopes}
    return {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": "An access token from POST /oauth/token (ES256, keys at"
            " /.well-known/jwks.json).",
        },
        "apiKey": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "mgw_<prefix>_<secret>",
            "description": "An API key from POST /v1/me/api-keys, sent as a bearer token.",
        },
        "oauth2": {
            "type": "oauth2",
            "description": "Authorization code with PKCE for third-party apps, password for"
            " the first-party client mgw-app; TVs and consoles use the device grant (RFC"
            " 8628: POST /oauth/device/code, then /oauth/token).",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": "/oauth/authorize",
                    "tokenUrl": "/oauth/token",
                    "refreshUrl": "/oauth/token",
                    "scopes": named,
                },
                "password": {
                    "tokenUrl": "/oauth/token",
                    "refreshUrl": "/oauth/token",
                    "scopes": named,
                },
            },  # fmt: skip
        },
    }


async def openapi_document(request: Request) -> Response:
    """This document: OpenAPI 3.1, derived from the routes and their handlers."""
    body = getattr(request.app.state, "openapi_body", None)
    if body is None:
        try:
            ver = version("media-gateway")
        except PackageNotFoundError:
            ver = "0.0.0"
        doc = build(request.app.routes, version=ver)
        body = json.dumps(doc, separators=(",", ":")).encode()
        request.app.state.openapi_body = body
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "public, max-age=300"}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)
