"""Reading request bodies and parameters into validated values."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from api.errors import Problem, from_validation

M = TypeVar("M", bound=BaseModel)
INT32_MAX = 2**31 - 1  # Avro "int"


def reject_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL: refuse it here rather than dead-letter it later."""
    for v in value if isinstance(value, list) else (value,):
        if isinstance(v, str) and "\x00" in v:
            raise ValueError("must not contain NUL characters")
    return value


async def read_body(request: Request) -> Any:
    """The JSON body as parsed (None when empty): 415 for another media type, 400 for
    text that is not JSON. For bodies checked field by field rather than by a model."""
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype:
        raise Problem(415, "send the body as application/json", field="content-type")
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Problem(400, f"body is not valid JSON: {exc}", field="body") from None


async def read_json(request: Request, model: type[M], *, optional: bool = False) -> M:
    """The body validated by ``model``; ``optional``: an empty body is ``{}``."""
    data: Any = await read_body(request)
    if data is None and optional:
        data = {}
    if data is None:
        raise Problem(422, "a JSON body is required", field="body")
    if not isinstance(data, dict):
        raise Problem(422, "body must be a JSON object", field="body")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc) from None


def int_param(request: Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(422, f"{name} must be an integer", field=name) from None
    if not lo <= value <= hi:
        raise Problem(422, f"{name} must be between {lo} and {hi}", field=name)
    return value
