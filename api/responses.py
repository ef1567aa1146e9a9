"""Response bodies: one pydantic model per JSON answer, next to its handler.

A handler answers ``respond(SearchPage, body)`` rather than ``JSONResponse(body)``. The
model is the answer's one description: api/openapi.py reads the call from the handler's
source and puts the model's JSON schema in the document for that status, as it does for
``read_json`` and request bodies.

Serving does not pay for it: ``respond`` dumps ``data`` as ``JSONResponse`` would. With
``MGW_VALIDATE_RESPONSES=1`` (the test suite and the fuzz test's server set it) it also
validates the encoded body against the model and raises ``ResponseMismatch``, so a handler
and its model that disagree fail a test instead of misleading a client.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.responses import JSONResponse

VALIDATE_ENV = "MGW_VALIDATE_RESPONSES"


class Body(BaseModel):
    """A response body or a part of one: every field listed (``extra="forbid"``, so an
    undocumented field fails validation). A genuinely open part says ``extra="allow"``."""

    model_config = ConfigDict(extra="forbid")


class Page(BaseModel):
    """One page of a keyset-paged list: ``items``, and ``next_cursor`` to pass as
    ``cursor`` for the next page (null on the last). A paged body subclasses this,
    narrowing ``items``; the document shows it as ``allOf`` this component."""

    model_config = ConfigDict(extra="forbid")
    items: list[Any]
    next_cursor: str | None = Field(
        description="pass as cursor for the next page; null on the last page"
    )


class Accepted(BaseModel):
    """A command's answer (202): the consistency token of the event it appended, and
    what the command names (the id it created, ...)."""

    model_config = ConfigDict(extra="allow")
    position: str = Field(description="the consistency token, also in X-Consistency-Token")


class ResponseMismatch(RuntimeError):
    """A handler answered a body its model does not describe (only raised while
    ``MGW_VALIDATE_RESPONSES=1``)."""


def validating() -> bool:
    return os.environ.get(VALIDATE_ENV) == "1"


def check(model: type[BaseModel], body: bytes) -> None:
    """Raise ``ResponseMismatch`` unless ``body`` (JSON) is an instance of ``model``."""
    try:
        model.model_validate_json(body)
    except ValidationError as e:
        raise ResponseMismatch(f"{model.__name__}: {e}") from None


def respond(
    model: type[BaseModel],
    data: Any,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    background: BackgroundTask | None = None,
) -> JSONResponse:
    """``data`` as JSON, described by ``model`` (checked only while validating)."""
    response = JSONResponse(data, status_code=status, headers=headers, background=background)
    if validating():
        check(model, bytes(response.body))
    return response


def schema_of(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A reference to ``model``'s schema, which is added to ``components`` with the
    models it uses. A paged body is ``allOf`` the shared ``Page``. Two different models
    of one name are refused: a reference must mean one thing."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        _add(components, name, sub)
    if issubclass(model, Page) and model is not Page:
        _add(components, "Page", _page_schema())
        schema = {"allOf": [{"$ref": "#/components/schemas/Page"}], **schema}
    _add(components, model.__name__, schema)
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _page_schema() -> dict[str, Any]:
    schema = Page.model_json_schema()
    schema.pop("additionalProperties", None)  # a page's body says more than this
    return schema


def _add(components: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    have = components.setdefault(name, schema)
    if have != schema:
        raise ValueError(f"two different schemas are named {name}: rename one model")
