"""Settings: every value read from the environment or a ``<NAME>_FILE``, every bad one
named in a single message, and `mgw` refusing to start on them with exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import SECRET_SETTINGS, Settings, SettingsError, env_value

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "q7dMOnvW6p0Sm0xZPZ6FkV6n3kGmXr2v2Vd2lJh0VbA="


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.database_url is None and s.port == 8080 and s.log_level == "INFO"
    assert s.vector_store == "edge" and s.identity.smtp_tls == "none"


def test_every_secret_reads_its_file(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    for name in SECRET_SETTINGS:
        path = tmp_path / name.lower()
        path.write_text(f"value-of-{name}\n")
        env[f"{name}_FILE"] = str(path)
    for name in SECRET_SETTINGS:
        assert env_value(env, name) == f"value-of-{name}"


def test_file_values_reach_the_settings(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("postgresql://mgw:s3cret@db:5432/mgw\n")
    (tmp_path / "key").write_text(SECRET_KEY + "\n")
    (tmp_path / "hook").write_text("hook-secret")
    (tmp_path / "smtp").write_text("mail-pass\r\n")
    s = Settings.from_env(
        {
            "DATABASE_URL_FILE": str(tmp_path / "db"),
            "MGW_SECRET_KEY_FILE": str(tmp_path / "key"),
            "MGW_WEBHOOK_SECRET_FILE": str(tmp_path / "hook"),
            "MGW_SMTP_PASSWORD_FILE": str(tmp_path / "smtp"),
            "MGW_PORT": "9000",
        }
    )
    assert s.database_url == "postgresql://mgw:s3cret@db:5432/mgw"
    assert s.identity.secret_key == SECRET_KEY
    assert s.identity.smtp_password == "mail-pass"
    assert s.webhook_secret("netflix") == "hook-secret" and s.port == 9000


def test_every_bad_value_is_named_at_once(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(
            {
                "MGW_PORT": "eighty",
                "MGW_BATCH_SIZE": "0",
                "DATABASE_URL": "mysql://root:hunter2@db/mgw",
                "REDIS_URL_FILE": str(tmp_path / "missing"),
                "MGW_SECRET_KEY": "short",
                "MGW_SMTP_TLS": "maybe",
                "MGW_RUN_PROJECTORS": "sometimes",
                "MGW_RATE_LIMITS": "login=ten/60",
                "MGW_OAUTH_CLIENTS": "[{",
                "MGW_HEARTBEAT_S": "-1",
                "MGW_OIDC_GOOGLE_ISSUER": "https://accounts.google.com",
            }
        )
    problems = caught.value.problems
    named = [
        "MGW_PORT",
        "MGW_BATCH_SIZE",
        "DATABASE_URL",
        "REDIS_URL_FILE",
        "MGW_SECRET_KEY",
        "MGW_SMTP_TLS",
        "MGW_RUN_PROJECTORS",
        "MGW_RATE_LIMITS",
        "MGW_OAUTH_CLIENTS",
        "MGW_HEARTBEAT_S",
        "MGW_OIDC_GOOGLE_CLIENT_ID",
    ]
    for name in named:
        assert any(name in p for p in problems), (name, problems)
    assert len(problems) == len(named)
    # a URL may carry a password: the message names the variable, never echoes the value
    assert "hunter2" not in str(caught.value)


def test_a_value_and_its_file_together_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("from-file")
    with pytest.raises(SettingsError, match="MGW_SMTP_PASSWORD and MGW_SMTP_PASSWORD_FILE"):
        Settings.from_env(
            {"MGW_SMTP_PASSWORD": "inline", "MGW_SMTP_PASSWORD_FILE": str(tmp_path / "pw")}
        )


def test_mgw_refuses_to_start_and_names_every_bad_value(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MGW_PORT": "99999",
        "MGW_SECRET_KEY_FILE": str(tmp_path / "no-such-file"),
        "MGW_LOG_LEVEL": "loud",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mgw.cli", "up", "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "3 setting(s) need fixing" in done.stderr
    for name in ("MGW_PORT", "MGW_SECRET_KEY_FILE", "MGW_LOG_LEVEL"):
        assert name in done.stderr
    assert "Traceback" not in done.stderr
    # nothing was started or created before the refusal
    assert not (tmp_path / "data").exists()
