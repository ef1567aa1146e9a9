"""Schemathesis against the running app (real PostgreSQL, Redis, embedded log) through
/openapi.json, as an anonymous caller, a user and an admin: every operation, a fixed
number of examples each, the seed printed. No response may be a 5xx, and every response
must match the document: its status, content type, headers and body schema."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import httpx2 as httpx
import pytest

from core.settings import Settings
from tests.conftest import ADMIN_EMAIL, ADMIN_PASSWORD
from tests.identity_helpers import PASSWORD
from tests.live_server import LiveServer

EXAMPLES = int(os.environ.get("MGW_FUZZ_EXAMPLES", "8"))
CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    )
)
# a signed-in fuzzer must not end its own session or lock itself out midway
SELF_HARM = r"/logout|/oauth/revoke|/sessions|/lock|/mfa|/roles/|/password|/api-keys/\{"


def _token(base: str, email: str, password: str) -> str:
    r = httpx.post(
        f"{base}/oauth/token",
        data={"grant_type": "password", "client_id": "mgw-app", "username": email,
              "password": password},
        timeout=30,
    )  # fmt: skip
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def _st(base: str, seed: int, cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    st = Path(sys.executable).parent / "st"
    return subprocess.run(
        [str(st), "run", f"{base}/openapi.json", "-n", str(EXAMPLES), "--seed", str(seed),
         "-c", CHECKS, "--phases", "examples,fuzzing", "--no-color", "--request-timeout", "30",
         *extra],
        capture_output=True, text=True, timeout=900, cwd=cwd,  # its cache stays in tmp
    )  # fmt: skip


@pytest.mark.parametrize("role", ["anonymous", "user", "admin"])
def test_schemathesis_finds_no_server_error_and_no_mismatch(
    app_settings: Settings, role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mgw.app import create_app

    # the server checks each body it answers against its model (api/responses.py), so a
    # mismatch is a 500 here as well as a schema failure in schemathesis
    monkeypatch.setenv("MGW_VALIDATE_RESPONSES", "1")

    seed = int(os.environ.get("MGW_FUZZ_SEED") or random.randrange(1, 2**31))
    print(f"schemathesis seed {seed} (MGW_FUZZ_SEED={seed} repeats this run)")
    with LiveServer(create_app(app_settings)) as server:
        extra: list[str] = []
        if role == "admin":
            token = _token(server.http, ADMIN_EMAIL, ADMIN_PASSWORD)
            extra = ["-H", f"Authorization: Bearer {token}", "--exclude-path-regex", SELF_HARM]
        elif role == "user":
            email = f"fuzz.{seed}@example.com"
            r = httpx.post(
                f"{server.http}/v1/auth/register",
                json={"email": email, "password": PASSWORD, "display_name": "Fuzz"},
                timeout=30,
            )
            assert r.status_code == 201, r.text
            token = _token(server.http, email, PASSWORD)
            extra = ["-H", f"Authorization: Bearer {token}", "--exclude-path-regex", SELF_HARM]
        done = _st(server.http, seed, tmp_path, *extra)
    out = done.stdout + done.stderr
    print(out[-6000:])
    assert "Test cases:" in out, out[-3000:]
    assert done.returncode == 0, f"seed {seed}: schemathesis failed\n{out[-8000:]}"
