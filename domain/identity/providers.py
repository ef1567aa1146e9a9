"""External sign-in providers: what each one speaks, and how its answers are judged.

Google and Apple are OpenID Connect providers: their endpoints come from
``<issuer>/.well-known/openid-configuration`` and the user is whoever the signed ID
token names. GitHub speaks plain OAuth 2: no discovery and no ID token, so its endpoints
are fixed paths under the issuer and the user comes from its REST API (``/user`` and
``/user/emails``) called with the access token. Any other provider name is treated as
a generic OIDC provider.

Every flow is the authorization-code flow with PKCE S256, a ``state`` (the callback
belongs to a flow this server started) and, for OIDC, a ``nonce`` (the ID token was
minted for that flow). An ID token is accepted only with a signature by a key from the
provider's JWKS (RS256 or ES256) and claims that pass ``validate_id_token_claims``.

Apple differs in three ways: the callback arrives as a POST form (``response_mode=
form_post``), the client secret is a short ES256 JWT signed with the team's key
(``apple_client_secret``), and ``email_verified`` may be the string ``"true"``.

Nothing here opens a connection; ``api/identity/external.py`` does the HTTP.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import jwt

#: ID-token signature algorithms accepted; never ``none`` and never an HMAC
ALLOWED_ALGORITHMS = ("RS256", "ES256")
#: the audience of Apple's client-secret JWT, whatever the issuer is configured to
APPLE_AUDIENCE = "https://appleid.apple.com"
#: clock skew tolerated on ``exp`` and ``iat``
LEEWAY_S = 60
#: an ID token issued longer ago than this is stale: the code was just exchanged
MAX_ID_TOKEN_AGE_S = 600
MAX_REDIRECT_AFTER = 2000
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


class ExternalSignInError(Exception):
    """A sign-in that cannot complete. ``reason`` is short and safe to show (it never
    holds a token or a code); ``field`` names the request part at fault: ``state``,
    ``code``, ``error``, ``provider`` or ``redirect_after``."""

    def __init__(self, reason: str, *, field: str = "code") -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


@dataclass(frozen=True, slots=True)
class ExternalIdentity:
    """Who the provider says signed in. ``email_verified`` is the provider's word."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    name: str | None


@dataclass(frozen=True, slots=True)
class ProviderProfile:
    name: str
    protocol: Literal["oidc", "oauth2"]
    scope: str
    #: ``form_post`` when the provider POSTs the callback (Apple)
    response_mode: str | None = None
    #: further ``iss`` values the provider's ID tokens carry for the issuer URL
    issuer_aliases: Mapping[str, tuple[str, ...]] | None = None


_PROFILES = {
    "google": ProviderProfile(
        "google",
        "oidc",
        "openid email profile",
        # Google's ID tokens say either form (developers.google.com/identity/openid-connect)
        issuer_aliases={"https://accounts.google.com": ("accounts.google.com",)},
    ),
    "apple": ProviderProfile("apple", "oidc", "openid name email", response_mode="form_post"),
    "github": ProviderProfile("github", "oauth2", "read:user user:email"),
}


def profile_for(name: str) -> ProviderProfile:
    """The known profile of ``name``; another name is a generic OIDC provider."""
    return _PROFILES.get(name) or ProviderProfile(name, "oidc", "openid email profile")


def discovery_url(issuer: str) -> str:
    return f"{issuer.rstrip('/')}/.well-known/openid-configuration"


@dataclass(frozen=True, slots=True)
class GitHubEndpoints:
    authorize: str
    token: str
    api: str


def github_endpoints(issuer: str) -> GitHubEndpoints:
    """github.com's API lives at api.github.com; a GitHub Enterprise Server (and the test
    fake) serves it at ``<issuer>/api/v3``."""
    base = issuer.rstrip("/")
    host = urlsplit(base).hostname or ""
    api = "https://api.github.com" if host == "github.com" else f"{base}/api/v3"
    return GitHubEndpoints(f"{base}/login/oauth/authorize", f"{base}/login/oauth/access_token", api)


def authorization_params(
    profile: ProviderProfile,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    nonce: str,
    code_challenge: str,
) -> dict[str, str]:
    """The query of the authorization request (RFC 6749 §4.1.1, RFC 7636, OIDC §3.1.2.1)."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": profile.scope,
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    if profile.protocol == "oidc":
        params["nonce"] = nonce
    if profile.response_mode:
        params["response_mode"] = profile.response_mode
    return params


def apple_client_secret(
    private_key_pem: bytes,
    *,
    team_id: str,
    key_id: str,
    client_id: str,
    now: float,
    ttl_s: int = 300,
) -> str:
    """Apple's client secret: an ES256 JWT by the team's key (Apple allows up to 6 months;
    a fresh one per exchange keeps a leaked one short-lived)."""
    claims = {
        "iss": team_id,
        "sub": client_id,
        "aud": APPLE_AUDIENCE,
        "iat": int(now),
        "exp": int(now) + ttl_s,
    }
    try:
        return jwt.encode(claims, private_key_pem, algorithm="ES256", headers={"kid": key_id})
    except (ValueError, TypeError, jwt.PyJWTError) as exc:
        raise ExternalSignInError(
            "the Apple private key cannot sign (a PKCS#8 P-256 PEM is needed)", field="provider"
        ) from exc


def id_token_algorithm(header: Mapping[str, Any]) -> str:
    """The header's ``alg`` when it is one this server verifies, checked before any key is
    looked up (so ``none`` and HS256-with-a-public-key never reach a verifier)."""
    alg = header.get("alg")
    if alg not in ALLOWED_ALGORITHMS:
        raise ExternalSignInError(f"ID token algorithm {str(alg)[:16]!r} is not accepted")
    if "crit" in header:
        raise ExternalSignInError("ID token carries critical header extensions")
    return str(alg)


def select_jwk(jwks: Mapping[str, Any], kid: str | None, alg: str) -> dict[str, Any] | None:
    """The signing key named ``kid`` (or the only signing key when the token names none)."""
    keys = jwks.get("keys")
    if not isinstance(keys, list):
        return None
    kty = "RSA" if alg.startswith("RS") else "EC"
    usable = [
        k
        for k in keys
        if isinstance(k, dict)
        and k.get("kty") == kty
        and k.get("use", "sig") == "sig"
        and k.get("alg", alg) == alg
    ]
    if kid is None:
        return usable[0] if len(usable) == 1 else None
    return next((k for k in usable if k.get("kid") == kid), None)


def validate_id_token_claims(
    claims: Mapping[str, Any],
    *,
    provider: str,
    issuer: str,
    client_id: str,
    nonce: str,
    now: float,
) -> None:
    """OIDC Core §3.1.3.7 on claims whose signature already verified."""
    accepted = (issuer, *((profile_for(provider).issuer_aliases or {}).get(issuer, ())))
    if claims.get("iss") not in accepted:
        raise ExternalSignInError("ID token issuer does not match the provider")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if client_id not in audiences:
        raise ExternalSignInError("ID token audience is not this client")
    if len(audiences) > 1 and claims.get("azp") != client_id:
        raise ExternalSignInError("ID token has several audiences and another azp")
    exp, iat = _number(claims.get("exp")), _number(claims.get("iat"))
    if exp is None or iat is None:
        raise ExternalSignInError("ID token lacks exp or iat")
    if now > exp + LEEWAY_S:
        raise ExternalSignInError("ID token expired")
    if iat > now + LEEWAY_S:
        raise ExternalSignInError("ID token issued in the future")
    if iat < now - MAX_ID_TOKEN_AGE_S - LEEWAY_S:
        raise ExternalSignInError("ID token is stale")
    nbf = _number(claims.get("nbf"))
    if nbf is not None and nbf > now + LEEWAY_S:
        raise ExternalSignInError("ID token is not valid yet")
    got = claims.get("nonce")
    if not isinstance(got, str) or not hmac.compare_digest(got.encode(), nonce.encode()):
        raise ExternalSignInError("ID token nonce does not match this sign-in")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > 255:
        raise ExternalSignInError("ID token lacks a subject")


def identity_from_id_token(
    provider: str, claims: Mapping[str, Any], *, name: str | None = None
) -> ExternalIdentity:
    """The identity in validated claims; ``name`` stands in when the token has none (Apple
    sends the name once, outside the token)."""
    email = claims.get("email")
    email = email.strip() if isinstance(email, str) and email.strip() else None
    return ExternalIdentity(
        provider=provider,
        subject=str(claims["sub"]),
        email=email,
        email_verified=email is not None and _true(claims.get("email_verified")),
        name=_name(claims) or name,
    )


def apple_user_name(user_json: str | None) -> str | None:
    """The name in Apple's first-sign-in ``user`` form field
    (``{"name": {"firstName", "lastName"}, "email"}``). Unsigned: a display name only."""
    if not user_json or len(user_json) > 4096:
        return None
    try:
        user = json.loads(user_json)
    except ValueError:
        return None
    name = user.get("name") if isinstance(user, dict) else None
    if not isinstance(name, dict):
        return None
    parts = [name.get("firstName"), name.get("lastName")]
    joined = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return joined[:200] or None


def github_identity(
    provider: str, user: Mapping[str, Any], emails: Sequence[Mapping[str, Any]]
) -> ExternalIdentity:
    """The GitHub user, with their primary email when GitHub has verified it. An unverified
    primary is passed on as unverified; no other address stands in for it."""
    uid = user.get("id")
    if isinstance(uid, bool) or not isinstance(uid, int | str) or str(uid) == "":
        raise ExternalSignInError("GitHub user has no id")
    primary = next((e for e in emails if isinstance(e, Mapping) and e.get("primary")), None)
    email = primary.get("email") if primary else None
    email = email if isinstance(email, str) and email else None
    verified = email is not None and primary is not None and primary.get("verified") is True
    name = user.get("name") or user.get("login")
    return ExternalIdentity(
        provider=provider,
        subject=str(uid),
        email=email,
        email_verified=verified,
        name=name if isinstance(name, str) else None,
    )


def provider_error(value: str) -> str:
    """A provider's ``error`` code fit to repeat (RFC 6749 codes are short ASCII)."""
    return value if _ERROR_CODE.fullmatch(value) else "invalid"


def safe_redirect_after(value: str | None, base_url: str) -> str | None:
    """Where to send the user after sign-in: a path on this site or a URL under
    ``base_url``; anything else would make the callback an open redirect."""
    if value is None or value == "":
        return None
    base = base_url.rstrip("/")
    ok = len(value) <= MAX_REDIRECT_AFTER and (
        (value.startswith("/") and not value.startswith(("//", "/\\")))
        or value == base
        or value.startswith(base + "/")
    )
    if not ok or any(c in value for c in "\r\n\t\\"):
        raise ExternalSignInError(
            "redirect_after must be a path on this site or a URL under the public URL",
            field="redirect_after",
        )
    return value


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _true(v: object) -> bool:
    return v is True or (isinstance(v, str) and v.strip().lower() == "true")


def _name(claims: Mapping[str, Any]) -> str | None:
    name = claims.get("name")
    if isinstance(name, str) and name.strip():
        return name.strip()[:200]
    parts = [claims.get("given_name"), claims.get("family_name")]
    joined = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return joined[:200] or None
