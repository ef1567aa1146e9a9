"""Opaque keyset cursors: the sort key of the last item a page returned."""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from api.errors import Problem
from api.requests import reject_nul


def encode_cursor(key: Sequence[Any]) -> str:
    plain = [v.isoformat() if isinstance(v, datetime) else v for v in key]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(raw: str, kinds: Sequence[type]) -> tuple[Any, ...]:
    """The key back, each part checked against ``kinds`` (datetime parts come back as
    aware datetimes); 422 naming ``cursor`` for anything this API did not hand out."""
    try:
        values = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if not isinstance(values, list) or len(values) != len(kinds):
            raise ValueError("wrong shape")
        out: list[Any] = []
        for v, kind in zip(values, kinds, strict=True):
            if kind is datetime:
                ts = datetime.fromisoformat(v)
                if ts.tzinfo is None:
                    raise ValueError("naive time")
                out.append(ts)
            elif isinstance(v, kind):
                if isinstance(v, str):
                    reject_nul(v)
                    v.encode("utf-8")  # a lone surrogate cannot reach the database
                out.append(v)
            else:
                raise ValueError("wrong type")
        return tuple(out)
    except (ValueError, TypeError, UnicodeError, RecursionError):
        raise Problem(422, "cursor is not one this API returned", field="cursor") from None
