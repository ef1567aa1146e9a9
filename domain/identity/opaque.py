"""Opaque secrets: random tokens, their stored hashes, and API keys.

Refresh, reset and verification tokens and authorization/device codes are random
(256 bits by default), so the server keeps only their SHA-256: a stolen database does
not yield usable tokens, and no salt or slow hash is needed for values nobody can guess.
Values with less entropy (backup codes, ~50 bits) get an HMAC under a server key
instead, so the stored hashes cannot be brute-forced without the key.

API keys read ``mgw_<prefix>_<secret>``: the fixed ``mgw_`` marks them for secret
scanners, the 8-character prefix is stored in the clear to find the key's row (and to
show the user which key is which), and only the secret's hash is stored. Neither part
contains ``_``, so splitting is unambiguous, and parsing is strict: anything else is
not a key, before any database lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from typing import NamedTuple

_PREFIX_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
_SECRET_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
PREFIX_LENGTH = 8
SECRET_LENGTH = 32  # 32 of 62 characters: 190 bits
_SECRET_MAX = 64  # longer secrets are accepted by the parser for a future format
_API_KEY = re.compile(r"mgw_([a-z0-9]{8})_([A-Za-z0-9]{32,64})")
_API_KEY_MAX = len("mgw_") + PREFIX_LENGTH + 1 + _SECRET_MAX


class ApiKey(NamedTuple):
    full: str
    prefix: str
    secret: str


def new_token(nbytes: int = 32) -> str:
    """A random URL-safe token of ``nbytes`` random bytes."""
    return secrets.token_urlsafe(nbytes)


def token_hash(token: str) -> str:
    """Hex SHA-256 of a high-entropy token: what the database stores and looks up."""
    return hashlib.sha256(token.encode()).hexdigest()


def keyed_hash(key: bytes, value: str) -> str:
    """Hex HMAC-SHA256 of a low-entropy value under a server key."""
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


def same(a: str, b: str) -> bool:
    """Constant-time equality of two strings."""
    return hmac.compare_digest(a.encode(), b.encode())


def new_api_key() -> ApiKey:
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(SECRET_LENGTH))
    return ApiKey(f"mgw_{prefix}_{secret}", prefix, secret)


def parse_api_key(value: str) -> tuple[str, str] | None:
    """``(prefix, secret)`` of a well-formed API key, else None."""
    if not isinstance(value, str) or len(value) > _API_KEY_MAX or not value.isascii():
        return None
    match = _API_KEY.fullmatch(value)
    return (match.group(1), match.group(2)) if match else None
