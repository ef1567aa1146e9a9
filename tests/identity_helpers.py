"""Signing in from tests: the real endpoints, no shortcuts."""

from __future__ import annotations

import itertools
from typing import Any

from starlette.testclient import TestClient

from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD

PASSWORD = "correct horse battery staple"
_n = itertools.count()


def password_login(client: TestClient, email: str, password: str, **extra: str) -> Any:
    return client.post(
        "/oauth/token",
        data={
            "grant_type": "password",
            "client_id": "mgw-app",
            "username": email,
            "password": password,
            **extra,
        },
    )


def bearer(tokens: dict[str, Any]) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def admin_headers(client: TestClient) -> dict[str, str]:
    r = password_login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert r.status_code == 200, r.text
    return bearer(r.json())


def new_user(client: TestClient, name: str | None = None) -> tuple[str, dict[str, str]]:
    """Register a fresh account and sign it in: (user id, Authorization headers)."""
    name = name or f"user{next(_n)}"
    email = f"{name}.{next(_n)}@example.com"
    r = client.post(
        "/v1/auth/register",
        json={"email": email, "password": PASSWORD, "display_name": name.title()},
    )
    assert r.status_code == 201, r.text
    tokens = password_login(client, email, PASSWORD)
    assert tokens.status_code == 200, tokens.text
    return r.json()["id"], bearer(tokens.json())
