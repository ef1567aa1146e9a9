"""Errors as RFC 9457 problem details, each naming the field at fault."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from core.backoff import describe, is_transient

log = logging.getLogger("mgw.api")

PROBLEM = "application/problem+json"


class ProblemJSON(JSONResponse):
    media_type = PROBLEM


class Problem(Exception):
    def __init__(
        self,
        status: int,
        detail: str,
        *,
        field: str | None = None,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
        title: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.errors = list(errors or ([{"field": field, "message": detail}] if field else []))
        self.headers = headers or {}
        self.title = title or HTTPStatus(status).phrase

    def response(self, request: Request | None = None) -> Response:
        body: dict[str, Any] = {
            "type": "about:blank",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if request is not None:
            body["instance"] = request.url.path
        if self.field:
            body["field"] = self.field
        if self.errors:
            body["errors"] = self.errors
        return ProblemJSON(body, status_code=self.status, headers=self.headers)


def from_validation(exc: ValidationError, prefix: str = "") -> Problem:
    errors = []
    for e in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in e["loc"] if p != "__root__")
        errors.append({"field": f"{prefix}{loc}" or "body", "message": e["msg"]})
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    return Problem(
        422, f"{first['field']}: {first['message']}", field=first["field"], errors=errors
    )


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(request)


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return Problem(exc.status_code, str(exc.detail), headers=dict(exc.headers or {})).response(
        request
    )


#: seconds a client should wait before retrying when a dependency is unavailable
RETRY_AFTER_S = 5


def transient_exceptions() -> tuple[type[Exception], ...]:
    """The exception classes ``core.backoff.is_transient`` can say yes to, for handlers
    registered by class.

    Registered by class, Starlette answers them in its inner exception middleware and the
    request ends there. Left to the catch-all (``Exception``), the outer server-error
    middleware answers and then re-raises, uvicorn logs a traceback and closes the
    connection: under load, while Redis restarted, clients reusing those keep-alive
    connections saw them reset instead of reading a 503 (the chaos harness found it,
    docs/reliability.md)."""
    import httpx
    import psycopg
    import redis.exceptions as redis_errors

    from streams.log import LogError

    return (
        ConnectionError,
        TimeoutError,
        psycopg.OperationalError,
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        httpx.TransportError,
        LogError,
    )


async def transient_handler(request: Request, exc: Exception) -> Response:
    if is_transient(exc):
        return _unavailable(request, exc)
    # a LogError that says it is not transient: a bug or a misconfiguration, logged as
    # the catch-all would (which this handler keeps from seeing it)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return Problem(500, "internal error; the request was not applied").response(request)


def _unavailable(request: Request, exc: Exception) -> Response:
    failure = describe(exc)
    return Problem(
        503,
        f"{failure.subject} {failure.detail}; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    ).response(request)


async def unhandled_handler(request: Request, exc: Exception) -> Response:
    if is_transient(exc):
        # a dependency down, restarting or saturated: the client may retry, and is told when
        return _unavailable(request, exc)
    return Problem(500, "internal error; the request was not applied").response(request)


async def encode_error_handler(request: Request, exc: Exception) -> Response:
    # Validation should catch everything first; this keeps a miss from becoming a 500.
    return Problem(422, f"the event does not fit its schema: {exc}", field="body").response(request)
