"""JWT access and ID tokens: ES256 signatures, strict verification, a verified-token cache.

Access tokens are short-lived JWTs (RFC 9068, ``typ: at+jwt``) signed with ES256 under
a key named by ``kid``. Several keys verify at once: after a rotation the new key signs
and the old one keeps verifying until its last tokens expire (``KeySet``). The public
keys are published as a JWKS for other services.

Verification accepts exactly one shape and turns every failure into ``InvalidToken``
with a short reason a client may see. The header is checked by hand before PyJWT sees
the token: only ES256 (so neither ``alg: none`` nor the HS256-with-the-public-key
confusion can reach a verifier), a ``kid`` this server holds, the access-token ``typ``,
no ``crit`` extensions. Time claims are checked against the caller's ``now`` (tests and
replays pass their own clock).

An ECDSA verification costs ~100 µs, while every API request carries a token that
was usually seen moments ago. ``AccessTokenVerifier`` keeps a bounded LRU of tokens it
has verified; a hit re-checks only the time and that the signing key is still the one
held, so a retired key's tokens stop working at once. Revocation is the session
check's job (the API looks the session up), not this cache's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ec import (
    EllipticCurvePrivateKey,
    EllipticCurvePublicKey,
)

ALGORITHM = "ES256"
ACCESS_TOKEN_TYPE = "at+jwt"
MAX_TOKEN_BYTES = 4096
_MAX_HEADER_CHARS = 512
_ACCESS_TYPES = frozenset({"at+jwt", "application/at+jwt"})
_STRING_CLAIMS = ("sub", "sid", "scope", "client_id", "jti")
_TIME_CLAIMS = ("iat", "nbf", "exp")
_LIST_CLAIMS = ("roles", "amr")
_REQUIRED = ("iss", "aud", *_STRING_CLAIMS, *_TIME_CLAIMS, *_LIST_CLAIMS)
_JWS = jwt.PyJWS(algorithms=[ALGORITHM])


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    private_key: EllipticCurvePrivateKey


@dataclass(frozen=True, slots=True)
class KeySet:
    """The key that signs now, and every public key that verifies (the active one too)."""

    active: SigningKey
    verifying: dict[str, EllipticCurvePublicKey] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.active.kid not in self.verifying:
            verifying = {self.active.kid: self.active.private_key.public_key()}
            object.__setattr__(self, "verifying", verifying | self.verifying)

    @classmethod
    def of(cls, active: SigningKey, older: Iterable[SigningKey] = ()) -> KeySet:
        """A key set signing with ``active`` and verifying with it and ``older``."""
        verifying = {k.kid: k.private_key.public_key() for k in older}
        return cls(active, {active.kid: active.private_key.public_key()} | verifying)


class InvalidToken(Exception):
    """A token that is not accepted; ``reason`` is short and safe to show to the client."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessClaims:
    subject: str
    session_id: str
    scope: frozenset[str]
    client_id: str
    roles: tuple[str, ...]
    amr: tuple[str, ...]
    #: seconds, to the millisecond (RFC 7519 NumericDate may have a fraction): a revocation
    #: in the same second as the token's issue must still tell before from after
    issued_at: float
    expires_at: int
    jti: str


# --- keys ---------------------------------------------------------------------------


def new_signing_key(kid: str | None = None) -> SigningKey:
    """A new P-256 key. The default kid is the UTC time to the microsecond plus a random
    suffix: unique, and sorting kids sorts keys by age."""
    if kid is None:
        now = time.time()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
        kid = f"{stamp}{int(now % 1 * 1_000_000):06d}Z-{secrets.token_hex(4)}"
    return SigningKey(kid, ec.generate_private_key(ec.SECP256R1()))


def private_pem(key: SigningKey) -> bytes:
    return key.private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_pem(kid: str, data: bytes) -> SigningKey:
    """A signing key from PEM; ValueError unless it is an unencrypted P-256 private key."""
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError(f"signing key {kid!r} is not a P-256 (ES256) private key")
    return SigningKey(kid, key)


def jwks(keyset: KeySet) -> dict[str, Any]:
    """The public keys as a JSON Web Key Set (RFC 7517), the active key first."""
    kids = [keyset.active.kid] + sorted(k for k in keyset.verifying if k != keyset.active.kid)
    keys = []
    for kid in kids:
        numbers = keyset.verifying[kid].public_numbers()
        keys.append(
            {
                "kty": "EC",
                "crv": "P-256",
                "x": _b64(numbers.x.to_bytes(32, "big")),
                "y": _b64(numbers.y.to_bytes(32, "big")),
                "kid": kid,
                "use": "sig",
                "alg": ALGORITHM,
            }
        )
    return {"keys": keys}


# --- issuing --------------------------------------------------------------------------


def issue_access_token(
    keyset: KeySet,
    *,
    issuer: str,
    audience: str,
    subject: str,
    session_id: str,
    scope: Iterable[str],
    client_id: str,
    roles: Iterable[str],
    amr: Iterable[str],
    ttl_s: int,
    now: float,
) -> str:
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "sid": session_id,
        "scope": " ".join(sorted(set(_names(scope)))),
        "client_id": client_id,
        "roles": sorted(set(_names(roles))),
        "amr": _names(amr),
        "iat": round(now, 3),
        "nbf": int(now),
        "exp": int(now) + ttl_s,
        "jti": secrets.token_urlsafe(16),
    }
    return _sign(keyset, claims, ACCESS_TOKEN_TYPE)


def issue_id_token(
    keyset: KeySet,
    *,
    issuer: str,
    audience: str,
    subject: str,
    nonce: str | None,
    email: str | None,
    email_verified: bool,
    auth_time: int,
    amr: Iterable[str],
    ttl_s: int,
    now: int,
) -> str:
    """An OpenID Connect ID token for ``audience`` (the client id)."""
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "auth_time": auth_time,
        "amr": _names(amr),
        "iat": now,
        "exp": now + ttl_s,
    }
    if nonce is not None:
        claims["nonce"] = nonce
    if email is not None:
        claims |= {"email": email, "email_verified": email_verified}
    return _sign(keyset, claims, "JWT")


def _sign(keyset: KeySet, claims: dict[str, Any], typ: str) -> str:
    active = keyset.active
    headers = {"kid": active.kid, "typ": typ}
    return jwt.encode(claims, active.private_key, algorithm=ALGORITHM, headers=headers)


# --- verifying ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Verified:
    claims: AccessClaims
    not_before: int
    kid: str
    key: EllipticCurvePublicKey


class AccessTokenVerifier:
    """Verifies access tokens for one issuer and audience, caching verified tokens.

    ``keyset_provider`` is a ``KeySet`` or a callable returning the current one (called
    on every verification, so it should return a held object, not load keys)."""

    def __init__(
        self,
        keyset_provider: Callable[[], KeySet] | KeySet,
        *,
        issuer: str,
        audience: str,
        leeway_s: int = 30,
        cache_size: int = 50_000,
    ) -> None:
        if isinstance(keyset_provider, KeySet):
            fixed = keyset_provider
            self._keyset: Callable[[], KeySet] = lambda: fixed
        else:
            self._keyset = keyset_provider
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.cache_size = cache_size
        # SHA-256 of the token -> what verifying it established; the 32-byte digest
        # instead of the ~500-byte token keeps a full cache tens of MB smaller
        self._cache: OrderedDict[bytes, _Verified] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, token: str, now: int | None = None) -> AccessClaims:
        """The claims of a valid access token; ``InvalidToken`` for anything else."""
        now = int(time.time()) if now is None else now
        if not isinstance(token, str) or not token.isascii():
            raise InvalidToken("malformed")
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("too large")
        keyset = self._keyset()  # a failing provider is a server fault: not caught
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cached(digest)
        # a hit counts only while its key is still held: retiring a key ends its tokens
        if cached is not None and keyset.verifying.get(cached.kid) is cached.key:
            try:
                self._check_time(cached.claims.expires_at, cached.not_before, now)
            except InvalidToken:
                self._forget(digest)
                raise
            return cached.claims
        try:
            verified = self._verify_uncached(token, keyset, now)
        except InvalidToken:
            raise
        except Exception as exc:  # the contract: nothing but InvalidToken leaves verify
            raise InvalidToken("malformed") from exc
        self._remember(digest, verified)
        return verified.claims

    def _verify_uncached(self, token: str, keyset: KeySet, now: int) -> _Verified:
        kid = _checked_header(token)
        key = keyset.verifying.get(kid)
        if key is None:
            raise InvalidToken("unknown kid")
        try:
            decoded = _JWS.decode_complete(token, key=key, algorithms=[ALGORITHM])
        except jwt.InvalidSignatureError as exc:
            raise InvalidToken("bad signature") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed") from exc
        payload = json.loads(decoded["payload"])
        if not isinstance(payload, dict):
            raise InvalidToken("malformed")
        claims, not_before = self._claims(payload)
        self._check_time(claims.expires_at, not_before, now)
        return _Verified(claims, not_before, kid, key)

    def _claims(self, p: dict[str, Any]) -> tuple[AccessClaims, int]:
        missing = [name for name in _REQUIRED if name not in p]
        if missing:
            raise InvalidToken("missing claims")
        if p["iss"] != self.issuer:
            raise InvalidToken("wrong issuer")
        aud = p["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or self.audience not in audiences:
            raise InvalidToken("wrong audience")
        if (
            not all(isinstance(p[name], str) for name in _STRING_CLAIMS)
            or not all(_is_int(p[name]) for name in ("nbf", "exp"))
            or not _is_time(p["iat"])
            or not all(_is_str_list(p[name]) for name in _LIST_CLAIMS)
            or not p["sub"]
        ):
            raise InvalidToken("malformed")
        claims = AccessClaims(
            subject=p["sub"],
            session_id=p["sid"],
            scope=frozenset(p["scope"].split()),
            client_id=p["client_id"],
            roles=tuple(p["roles"]),
            amr=tuple(p["amr"]),
            issued_at=float(p["iat"]),
            expires_at=p["exp"],
            jti=p["jti"],
        )
        return claims, max(p["nbf"], int(p["iat"]))

    def _check_time(self, expires_at: int, not_before: int, now: int) -> None:
        if expires_at + self.leeway_s <= now:
            raise InvalidToken("expired")
        if not_before - self.leeway_s > now:
            raise InvalidToken("not yet valid")

    def _cached(self, digest: bytes) -> _Verified | None:
        with self._lock:
            entry = self._cache.get(digest)
            if entry is not None:
                self._cache.move_to_end(digest)
            return entry

    def _forget(self, digest: bytes) -> None:
        with self._lock:
            self._cache.pop(digest, None)

    def _remember(self, digest: bytes, verified: _Verified) -> None:
        if self.cache_size <= 0:
            return
        with self._lock:
            self._cache[digest] = verified
            self._cache.move_to_end(digest)
            while len(self._cache) > self.cache_size:
                # least recently used first: expired tokens stop being used, so they go first
                self._cache.popitem(last=False)


def _checked_header(token: str) -> str:
    """The kid of a token whose header passes the cheap checks; InvalidToken otherwise."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or len(parts[0]) > _MAX_HEADER_CHARS:
        raise InvalidToken("malformed")
    try:
        header = json.loads(base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)))
    except (binascii.Error, ValueError) as exc:
        raise InvalidToken("malformed") from exc
    if not isinstance(header, dict):
        raise InvalidToken("malformed")
    if header.get("alg") != ALGORITHM:
        raise InvalidToken("unsupported alg")
    if "crit" in header or "b64" in header:
        raise InvalidToken("unsupported header")
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _ACCESS_TYPES:
        raise InvalidToken("not an access token")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise InvalidToken("missing kid")
    return kid


def _names(values: str | Iterable[str]) -> list[str]:
    """A list of names; a string is taken as space-separated names, not as characters."""
    return values.split() if isinstance(values, str) else list(values)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_str_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _is_time(value: Any) -> bool:
    """A NumericDate: an int, or a finite float (bool is an int in Python: not a time)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return value == value and abs(value) < 1e11
