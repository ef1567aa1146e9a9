"""Sealing: authenticated encryption of secrets the server must read back.

A TOTP secret cannot be hashed (the server recomputes codes from it), so it is stored
sealed with AES-256-GCM. The associated data binds a sealed value to where it belongs
(e.g. ``"totp:<user id>"``): a sealed secret copied onto another account's row does not
open there. The output names its format (``v1.``), so a later format or key can be
introduced without guessing what an old value is.

Keys come from one server secret through HKDF with a purpose label, so sealing keys,
backup-code HMAC keys and anything later never share key material.
"""

from __future__ import annotations

import base64
import binascii
import os
import re

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1."
_NONCE = 12
_TAG = 16
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
#: part of every derived key's HKDF info; changing it changes every derived key
_HKDF_NAMESPACE = b"media-gateway/"


class SealError(Exception):
    """A sealed value that does not open: tampered, another key or aad, unknown format."""


def seal(key: bytes, plaintext: str, *, aad: str) -> str:
    _check_key(key)
    nonce = os.urandom(_NONCE)  # random 96-bit nonces: safe far beyond our volume per key
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), aad.encode())
    return _VERSION + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode()


def unseal(key: bytes, sealed: str, *, aad: str) -> str:
    _check_key(key)
    if not sealed.startswith(_VERSION):
        raise SealError("unknown sealed format")
    body = sealed[len(_VERSION) :]
    if not _BASE64URL.fullmatch(body):
        raise SealError("sealed value is not base64url")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError) as exc:
        raise SealError("sealed value is not base64url") from exc
    if len(raw) < _NONCE + _TAG:
        raise SealError("sealed value is truncated")
    try:
        plaintext = AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], aad.encode())
    except InvalidTag as exc:
        raise SealError("sealed value does not open with this key and aad") from exc
    return plaintext.decode()


def derive_key(secret: bytes, purpose: str) -> bytes:
    """A 32-byte key for ``purpose`` from the server secret (HKDF-SHA256)."""
    if len(secret) < 16:
        raise ValueError("the server secret must have at least 16 bytes")
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=_HKDF_NAMESPACE + purpose.encode(),
    )
    return hkdf.derive(secret)


def _check_key(key: bytes) -> None:
    if len(key) != 32:
        raise ValueError("sealing keys are 32 bytes (AES-256)")
