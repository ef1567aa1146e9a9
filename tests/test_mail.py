"""Verification and reset mails over real SMTP: the messages, the SMTP mailer against an
in-process aiosmtpd server (plain, STARTTLS, TLS), the `mgw up` sink, and logs that
never carry a link."""

from __future__ import annotations

import logging
import socket
import stat
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from core.mail import MailError, SmtpMailer, mailer_from_settings, mask_address
from core.settings import IdentitySettings, Settings
from domain.identity.emails import (
    normalize_email,
    password_changed_notice,
    reset_message,
    verification_message,
)
from mgw.mailsink import mail_for_up, start_mail_sink
from tests.mail_server import link_in, smtp_server

SENDER = "Media Gateway <no-reply@mgw.example>"
TOKEN = "tok-3kX9pQ7vZ2mW8rT5yB1nC4"
VERIFY = f"http://127.0.0.1:8080/v1/auth/verify-email?token={TOKEN}"
RESET = f"https://tv.example.com/reset-password?token={TOKEN}"


def _verification(to: str = "alice@example.com", name: str = "Alice") -> EmailMessage:
    return verification_message(
        to=to, display_name=name, link=VERIFY, sender=SENDER, expires_minutes=24 * 60
    )


def _text(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # nothing listens once the socket is closed


# --- addresses -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "normalized"),
    [
        ("Alice@Example.COM", "alice@example.com"),
        ("  bob.smith+tv@mail.example.org \n", "bob.smith+tv@mail.example.org"),
        ("root@localhost", "root@localhost"),
        ("ÉLODIE@exemple.fr", "élodie@exemple.fr"),
        ("x@" + "a" * 60 + "." + "b" * 60 + ".com", "x@" + "a" * 60 + "." + "b" * 60 + ".com"),
    ],
)
def test_normalize_email_folds_case_and_strips(raw: str, normalized: str) -> None:
    assert normalize_email(raw) == normalized


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("alice smith@example.com", "spaces"),
        ("alice@exa mple.com", "spaces"),
        ("alice@@example.com", "exactly one @"),
        ("alice@bob@example.com", "exactly one @"),
        ("alice.example.com", "exactly one @"),
        ("@example.com", "nothing before"),
        ("alice@", "needs a dot"),
        ("alice@example", "needs a dot"),
        ("alice@example..com", "empty label"),
        ("alice@.example.com", "empty label"),
        ("alice@-example.com", "hyphen"),
        (".alice@example.com", "misplaced dot"),
        ("a" * 65 + "@example.com", "longer than 64"),
        ("a@" + "b" * 250 + ".com", "longer than 254"),
        ("alice\x00@example.com", "control"),
        ("alice@example.com\r\nBcc: eve@evil.example", "control"),
        ("ali\u202ece@example.com", "control"),  # right-to-left override
        ("ali\u200bce@example.com", "control"),  # zero-width space
        ("alice\u00a0@example.com", "spaces"),  # no-break space
        ("alice@example.com,eve@evil.example", "','"),
        ("eve@evil.example,x", "','"),
        ('"alice"@example.com', "'\"'"),
        ("<alice@example.com>", "'<'"),
    ],
)
def test_normalize_email_rejects(raw: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="email address|the part before|domain") as err:
        normalize_email(raw)
    assert complaint in str(err.value)


def test_mask_address() -> None:
    assert mask_address("alice@example.com") == "a***@example.com"
    assert mask_address("A@x.org") == "A***@x.org"
    assert mask_address("not-an-address") == "***"


# --- messages --------------------------------------------------------------------


def test_verification_message_shape() -> None:
    msg = verification_message(
        to="Alice@Example.com",
        display_name="Alice\r\nBcc: eve@evil.example",
        link=VERIFY,
        sender=SENDER,
        expires_minutes=24 * 60,
    )
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"
    assert msg["Bcc"] is None  # the CR/LF in the name did not make a header
    assert msg["Subject"] and msg["Date"] and msg["Message-ID"].endswith("@mgw.example>")
    assert msg.get_body(preferencelist=("plain",)) is not None
    html = msg.get_body(preferencelist=("html",))
    assert html is not None and f'href="{VERIFY}"' in html.get_content()
    assert "1 day" in _text(msg)


def test_messages_refuse_non_http_links() -> None:
    with pytest.raises(ValueError, match="http"):
        reset_message(to="a@b.co", display_name="", link="javascript:alert(1)", sender=SENDER)


def test_password_changed_notice_has_no_link() -> None:
    msg = password_changed_notice(to="alice@example.com", display_name="Alice", sender=SENDER)
    text = _text(msg)
    assert "signed out" in text and "http" not in msg.as_string()


# --- SMTP ------------------------------------------------------------------------


async def test_verification_mail_arrives_over_smtp() -> None:
    with smtp_server() as box:
        await SmtpMailer(box.host, box.port).send(_verification())
        got = box.wait_for("ALICE@example.com")
    assert got["To"].addresses[0].addr_spec == "alice@example.com"
    assert got["To"].addresses[0].display_name == "Alice"
    assert got["From"].addresses[0].addr_spec == "no-reply@mgw.example"
    assert got["Subject"] == "Confirm your email address for Media Gateway"
    assert link_in(got, "/v1/auth/verify-email") == VERIFY
    assert box.envelopes == [("no-reply@mgw.example", ["alice@example.com"])]


async def test_non_ascii_name_arrives_intact() -> None:
    with smtp_server() as box:
        await SmtpMailer(box.host, box.port).send(_verification(name="Zoë Ñandú"))
        got = box.wait_for("alice@example.com")
    assert got["To"].addresses[0].display_name == "Zoë Ñandú"
    assert "Hi Zoë Ñandú," in _text(got)
    assert link_in(got, "/v1/auth/verify-email") == VERIFY


async def test_reset_mail_arrives_over_smtp() -> None:
    msg = reset_message(to="bob@example.com", display_name="Bob", link=RESET, sender=SENDER)
    with smtp_server() as box:
        await SmtpMailer(box.host, box.port).send(msg)
        got = box.wait_for("bob@example.com")
    assert got["Subject"] == "Reset your Media Gateway password"
    assert link_in(got, "/reset-password") == RESET
    assert "30 minutes" in _text(got)


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_tls_modes_deliver_with_a_trusted_certificate(tls: str) -> None:
    with smtp_server(tls=tls) as box:
        mailer = SmtpMailer(box.host, box.port, tls, tls_context=box.client_tls)
        await mailer.send(_verification())
        assert link_in(box.wait_for("alice@example.com"), "/v1/auth/verify-email") == VERIFY


async def test_starttls_refuses_an_untrusted_certificate() -> None:
    with smtp_server(tls="starttls") as box:
        with pytest.raises(MailError, match="certificate") as err:
            await SmtpMailer(box.host, box.port, "starttls").send(_verification())
        assert box.messages == []
    assert TOKEN not in str(err.value)


async def test_plain_mailer_does_not_get_past_a_server_requiring_starttls() -> None:
    with smtp_server(tls="starttls") as box:
        with pytest.raises(MailError, match="530"):
            await SmtpMailer(box.host, box.port, "none").send(_verification())
        assert box.messages == []


async def test_closed_port_raises_mail_error_without_the_link() -> None:
    port = _closed_port()
    with pytest.raises(MailError) as err:
        await SmtpMailer("127.0.0.1", port, timeout=2).send(_verification())
    text = str(err.value)
    assert f"127.0.0.1:{port}" in text and "a***@example.com" in text
    assert TOKEN not in text and "alice@example.com" not in text
    assert err.value.__cause__ is None and err.value.__suppress_context__


async def test_logs_mask_the_address_and_never_carry_the_link(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with smtp_server() as box:
        await SmtpMailer(box.host, box.port).send(_verification())
        box.wait_for("alice@example.com")
    assert "mail to a***@example.com subject Confirm your email address" in caplog.text
    assert TOKEN not in caplog.text and "verify-email" not in caplog.text
    assert "alice@example.com" not in caplog.text


def test_mailer_from_settings() -> None:
    assert mailer_from_settings(Settings()) is None
    ident = IdentitySettings(smtp_host="smtp.example.com", smtp_port=587, smtp_tls="starttls")
    mailer = mailer_from_settings(Settings(identity=ident))
    assert isinstance(mailer, SmtpMailer)
    assert (mailer.host, mailer.port, mailer.tls) == ("smtp.example.com", 587, "starttls")
    secret = IdentitySettings(smtp_host="h", smtp_user="u", smtp_password="hunter2")
    assert "hunter2" not in repr(mailer_from_settings(Settings(identity=secret)))


# --- the `mgw up` sink -----------------------------------------------------------


async def test_sink_saves_eml_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    sink = start_mail_sink(tmp_path)
    try:
        _controller, host, port = sink
        mailer = SmtpMailer(host, port)
        await mailer.send(_verification())
        await mailer.send(
            reset_message(to="bob@example.com", display_name="", link=RESET, sender=SENDER)
        )
    finally:
        sink.stop()
    files = sorted((tmp_path / "mail").glob("*.eml"))
    assert len(files) == 2
    assert all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files)
    assert all(f.name.endswith(("-1.eml", "-2.eml")) for f in files)
    saved = [message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
    assert {str(m["Subject"]) for m in saved} == {
        "Confirm your email address for Media Gateway",
        "Reset your Media Gateway password",
    }
    # ASCII text goes 7bit: a developer can copy the link straight out of the file
    assert any(VERIFY in f.read_text() for f in files)
    assert f"mail for a***@example.com saved to {tmp_path / 'mail'}" in caplog.text
    assert TOKEN not in caplog.text and "alice@example.com" not in caplog.text


async def test_mail_for_up_uses_the_sink_without_smtp_host(tmp_path: Path) -> None:
    port = _closed_port()
    with mail_for_up(Settings(data_dir=tmp_path), {"MGW_SMTP_SINK_PORT": str(port)}) as (
        mailer,
        where,
    ):
        assert isinstance(mailer, SmtpMailer) and mailer.port == port
        assert where.startswith(f"smtp://127.0.0.1:{port} (sink:")
        await mailer.send(_verification())
    (saved,) = (tmp_path / "mail").glob("*.eml")
    msg = message_from_bytes(saved.read_bytes(), policy=policy.default)
    assert link_in(msg, "/v1/auth/verify-email") == VERIFY


def test_mail_for_up_uses_the_configured_server(tmp_path: Path) -> None:
    ident = IdentitySettings(smtp_host="smtp.example.com", smtp_port=465, smtp_tls="tls")
    with mail_for_up(Settings(data_dir=tmp_path, identity=ident)) as (mailer, where):
        assert isinstance(mailer, SmtpMailer) and mailer.host == "smtp.example.com"
        assert where == "smtp://smtp.example.com:465 (tls)"
    assert not (tmp_path / "mail").exists()
