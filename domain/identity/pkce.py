"""PKCE (RFC 7636), S256 only.

A public client (a SPA, a TV app) cannot keep a client secret, so it proves that the
party redeeming an authorization code is the one that asked for it: it sends
``BASE64URL(SHA256(verifier))`` with the authorization request and the verifier with
the token request. The ``plain`` method is not offered; it protects nothing that S256
does not, and OAuth 2.1 drops it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
_CHALLENGE = re.compile(r"[A-Za-z0-9_-]{43}")


def valid_verifier(verifier: str) -> bool:
    """43-128 characters of ``[A-Za-z0-9-._~]`` (RFC 7636 §4.1)."""
    return isinstance(verifier, str) and _VERIFIER.fullmatch(verifier) is not None


def valid_challenge(challenge: str) -> bool:
    """43 characters of base64url without padding: the size of an S256 challenge."""
    return isinstance(challenge, str) and _CHALLENGE.fullmatch(challenge) is not None


def challenge_s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verify_s256(verifier: str, challenge: str) -> bool:
    """True when ``verifier`` is valid and hashes to ``challenge`` (constant-time)."""
    if not valid_verifier(verifier):
        return False
    return hmac.compare_digest(challenge_s256(verifier).encode(), challenge.encode())
