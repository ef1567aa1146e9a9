"""Who is calling. Until sign-in lands, the user is the ``X-User-Id`` header."""

from __future__ import annotations

import re

from starlette.requests import Request

from api.errors import Problem

HEADER = "X-User-Id"
_USER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")


def current_user(request: Request) -> str:
    raw = request.headers.get(HEADER)
    if raw is None or raw.strip() == "":
        raise Problem(
            401,
            f"send the user id in {HEADER}",
            field=HEADER,
            headers={"WWW-Authenticate": 'X-User-Id realm="mgw"'},
        )
    if not _USER_ID.match(raw):
        raise Problem(
            401,
            f"{HEADER} must be 1-128 characters of letters, digits and _.:-",
            field=HEADER,
            headers={"WWW-Authenticate": 'X-User-Id realm="mgw"'},
        )
    return raw
