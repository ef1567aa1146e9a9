"""Identifiers and clocks.

Event ids are UUIDv7 (time-ordered, RFC 9562) so they sort by creation time in
indexes and logs. Content ids derived from an external source are UUIDv5, so the
same source record always maps to the same id and a replay decides the same way.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import uuid_utils

#: namespace for ids derived from external keys (e.g. "movielens:1")
MGW_NAMESPACE = uuid.UUID("6b1f5e2a-8f0c-4c1e-9a57-1d0b3e6c2f90")


def new_id() -> str:
    return str(uuid_utils.uuid7())


def derived_id(source_key: str) -> str:
    return str(uuid.uuid5(MGW_NAMESPACE, source_key))


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_millis(ts: datetime) -> int:
    return int(ts.timestamp() * 1000)


def from_millis(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def iso_z(ts: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, as the API writes times."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
