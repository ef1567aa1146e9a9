"""A real SMTP server for tests: aiosmtpd on a free loopback port, mail kept in memory.

    with smtp_server() as box:
        await SmtpMailer(box.host, box.port).send(msg)
        got = box.wait_for("alice@example.com")
        url = link_in(got, "/v1/auth/verify")

``smtp_server(tls="starttls")`` requires STARTTLS and ``tls="tls"`` speaks TLS from the
first byte, both with a self-signed certificate for 127.0.0.1 made at start;
``box.client_tls`` is a client context that trusts it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import re
import socket
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import getaddresses
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

_URL = re.compile(r"https?://[^\s<>\"']+")


@dataclass
class MailBox:
    host: str
    port: int
    client_tls: ssl.SSLContext | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    #: (mail from, rcpt tos) per message, as the server saw them
    envelopes: list[tuple[str, list[str]]] = field(default_factory=list)
    _arrived: threading.Condition = field(default_factory=threading.Condition)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = message_from_bytes(
            envelope.original_content or envelope.content, policy=policy.default
        )
        assert isinstance(msg, EmailMessage)
        with self._arrived:
            self.messages.append(msg)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def wait_for(self, to: str, timeout: float = 5) -> EmailMessage:
        """The first message to ``to`` (case-insensitive), waiting up to ``timeout``.
        Blocks the calling thread: from async tests, send first, then wait."""
        want = to.strip().lower()
        deadline = time.monotonic() + timeout
        with self._arrived:
            while True:
                for msg in self.messages:
                    if want in _recipients(msg):
                        return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no mail to {to} within {timeout}s; got {len(self.messages)} other(s)"
                    )
                self._arrived.wait(left)


def link_in(msg: EmailMessage, path_prefix: str) -> str:
    """The first URL in the text part whose path starts with ``path_prefix``."""
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None, "the message has no text/plain part"
    assert isinstance(part, EmailMessage)
    text = part.get_content()
    for url in _URL.findall(text):
        if urlsplit(url).path.startswith(path_prefix):
            return str(url)
    raise AssertionError(f"no link under {path_prefix} in the text part")


@contextmanager
def smtp_server(tls: str = "none") -> Iterator[MailBox]:
    """A running server for the block; ``tls``: none | starttls | tls."""
    from aiosmtpd.controller import Controller

    port = _free_port()
    box = MailBox("127.0.0.1", port)
    kwargs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if tls != "none":
            server_ctx, box.client_tls = _self_signed(Path(tmp))
            if tls == "starttls":
                kwargs = {"tls_context": server_ctx, "require_starttls": True}
            elif tls == "tls":
                kwargs = {"ssl_context": server_ctx}
            else:
                raise ValueError(f"tls must be none, starttls or tls, got {tls!r}")
        # aiosmtpd logs every DATA line at DEBUG: keep test logs free of mail bodies
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        controller = Controller(box, hostname=box.host, port=port, **kwargs)
        controller.start()
        try:
            yield box
        finally:
            controller.stop()


def _recipients(msg: EmailMessage) -> set[str]:
    values = [str(v) for name in ("To", "Cc") for v in msg.get_all(name, [])]
    return {addr.lower() for _, addr in getaddresses(values) if addr}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1 and
    localhost, and a client context that trusts exactly that certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mgw test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    (tmp / "cert.pem").write_bytes(cert_pem)
    (tmp / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    client = ssl.create_default_context(cadata=cert_pem.decode())
    return server, client
