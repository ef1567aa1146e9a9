"""Webhook signatures: HMAC-SHA256 over the timestamp and the body. No I/O.

A platform signs ``f"{timestamp}.".encode() + body`` with the shared secret and sends
``X-MGW-Timestamp: <unix seconds>`` and ``X-MGW-Signature: sha256=<hex>``. Signing
the timestamp with the body means an old delivery cannot be replayed with a fresh
timestamp; the tolerance bounds how long a captured one stays usable, and within
it the API refuses a second use of a signature (so a captured delivery cannot come
back under a new delivery id) and of a delivery id.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass

TOLERANCE_S = 300
_UNIX_SECONDS = re.compile(r"^\d{1,12}$")
TIMESTAMP_HEADER = "X-MGW-Timestamp"
SIGNATURE_HEADER = "X-MGW-Signature"
DELIVERY_HEADER = "X-MGW-Delivery"


@dataclass(frozen=True, slots=True)
class SignatureProblem:
    field: str  # the header at fault
    message: str


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str | None, signature: str | None, body: bytes, now: float
) -> SignatureProblem | None:
    """Why a delivery must be refused, or None when it is authentic and fresh."""
    if not timestamp:
        return SignatureProblem(TIMESTAMP_HEADER, "missing: send the signing time, unix seconds")
    if not signature:
        return SignatureProblem(SIGNATURE_HEADER, "missing: send sha256=<hex HMAC>")
    if not _UNIX_SECONDS.match(timestamp):
        return SignatureProblem(TIMESTAMP_HEADER, "must be an integer (unix seconds)")
    ts = int(timestamp)
    if abs(now - ts) > TOLERANCE_S:
        return SignatureProblem(
            TIMESTAMP_HEADER, f"more than {TOLERANCE_S} s away from the server's clock"
        )
    given = signature.strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(sign(secret, ts, body).encode(), given):
        return SignatureProblem(SIGNATURE_HEADER, "does not match the body and timestamp")
    return None
