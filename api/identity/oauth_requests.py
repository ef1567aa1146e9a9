"""The OAuth wire: reading requests (form-encoded, RFC 6749, or JSON parameters), the
client they name, the error answer (RFC 6749 §5.2) and the one answer every refused
credential gets."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.context import AppContext
from domain.identity.clients import OAuthClient

MAX_PARAM = 4096
#: wrong password, unknown account, locked account: one answer for all three
WRONG_CREDENTIALS = "wrong email or password"
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class OAuthError(Exception):
    """An RFC 6749 §5.2 error: ``{"error", "error_description"}``."""

    def __init__(self, error: str, description: str, status: int = 400, **extra: Any) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.extra = extra

    def response(self) -> Response:
        headers = dict(NO_STORE)
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="mgw"'
        return JSONResponse(
            {"error": self.error, "error_description": self.description, **self.extra},
            status_code=self.status,
            headers=headers,
        )


async def read_params(request: Request) -> dict[str, str]:
    """Form (RFC 6749) or JSON body; a parameter sent twice is refused (§3.1)."""
    raw = await request.body()
    if len(raw) > 64 * 1024:
        raise OAuthError("invalid_request", "request body too large")
    ctype = request.headers.get("content-type", "")
    try:
        if "json" in ctype:
            data = json.loads(raw or b"{}")
            if not isinstance(data, dict):
                raise OAuthError("invalid_request", "the JSON body must be an object")
            pairs = [(str(k), v) for k, v in data.items()]
        else:
            pairs = parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise OAuthError("invalid_request", "the body is not valid form data or JSON") from None
    out: dict[str, str] = {}
    for k, v in pairs:
        if k in out:
            raise OAuthError("invalid_request", f"{k} is repeated")
        if not isinstance(v, str):
            raise OAuthError("invalid_request", f"{k} must be a string")
        if len(v) > MAX_PARAM or not clean(v):
            raise OAuthError("invalid_request", f"{k} is too long or not valid text")
        out[k] = v
    return out


def clean(value: str) -> bool:
    """Text PostgreSQL and the hashes can take: no NUL, no lone UTF-16 surrogates."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def need(params: dict[str, str], name: str) -> str:
    value = params.get(name, "")
    if not value:
        raise OAuthError("invalid_request", f"{name} is required")
    return value


def client_for(c: AppContext, params: dict[str, str], grant: str) -> OAuthClient:
    client_id = params.get("client_id", "")
    client: OAuthClient | None = c.identity.clients.get(client_id)
    if client is None:
        raise OAuthError("invalid_client", "unknown client_id", status=401)
    if not client.allows(grant):
        raise OAuthError("unauthorized_client", f"{client_id} may not use {grant}")
    return client
