"""OAuth clients: who may ask for tokens, with which grants, redirecting where.

Two public clients exist by default: ``mgw-app`` (the first-party apps: password, refresh,
authorization code with PKCE) and ``mgw-tv`` (devices without a keyboard: the device
grant). More come from ``MGW_OAUTH_CLIENTS``. Every client here is public (no secret):
they run on users' devices, so PKCE and exact redirect URIs are what protect them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

PASSWORD = "password"
REFRESH = "refresh_token"
CODE = "authorization_code"
DEVICE = "urn:ietf:params:oauth:grant-type:device_code"
MFA = "urn:mgw:params:oauth:grant-type:mfa"
GRANTS = frozenset({PASSWORD, REFRESH, CODE, DEVICE, MFA})


@dataclass(frozen=True, slots=True)
class OAuthClient:
    client_id: str
    name: str
    grants: frozenset[str]
    redirect_uris: tuple[str, ...] = ()
    #: first-party clients may use the password grant
    first_party: bool = False

    def allows(self, grant: str) -> bool:
        return grant in self.grants


DEFAULT_CLIENTS: tuple[OAuthClient, ...] = (
    OAuthClient(
        "mgw-app",
        "Media Gateway apps",
        frozenset({PASSWORD, REFRESH, CODE, MFA, DEVICE}),
        ("http://127.0.0.1:8765/callback", "mgw://oauth/callback"),
        first_party=True,
    ),
    OAuthClient("mgw-tv", "Media Gateway on TVs", frozenset({DEVICE, REFRESH})),
)


def admin_console_client(base_url: str) -> OAuthClient:
    """``mgw-admin``: the admin console (api/admin_session.py) signs in through the code
    flow with PKCE, back to ``/admin/callback`` at the public URL."""
    uri = f"{base_url.rstrip('/')}/admin/callback"
    return OAuthClient(
        "mgw-admin", "Media Gateway admin console", frozenset({CODE, REFRESH}), (uri,)
    )


def parse_clients(text: str) -> tuple[OAuthClient, ...]:
    """``MGW_OAUTH_CLIENTS``: a JSON list of {client_id, name?, redirect_uris?, grants?}.

    A client listed with the id of a default one replaces it."""
    if not text.strip():
        return DEFAULT_CLIENTS
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"MGW_OAUTH_CLIENTS is not JSON: {exc}") from None
    if not isinstance(raw, list):
        raise ValueError("MGW_OAUTH_CLIENTS must be a JSON list of clients")
    clients = {c.client_id: c for c in DEFAULT_CLIENTS}
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("client_id"), str):
            raise ValueError(f"MGW_OAUTH_CLIENTS[{i}] needs a client_id string")
        grants = frozenset(item.get("grants") or (CODE, REFRESH))
        unknown = grants - GRANTS
        if unknown:
            raise ValueError(f"MGW_OAUTH_CLIENTS[{i}].grants: unknown {sorted(unknown)}")
        uris = tuple(item.get("redirect_uris") or ())
        if CODE in grants and not uris:
            raise ValueError(f"MGW_OAUTH_CLIENTS[{i}]: authorization_code needs redirect_uris")
        clients[item["client_id"]] = OAuthClient(
            item["client_id"],
            str(item.get("name") or item["client_id"]),
            grants,
            uris,
            first_party=bool(item.get("first_party", False)),
        )
    return tuple(clients.values())
