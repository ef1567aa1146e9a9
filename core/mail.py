"""Sending mail: the ``Mailer`` port and its SMTP adapter (aiosmtplib).

Verification and reset mails carry a token in their link, so nothing here writes a
message body anywhere but to the SMTP server: the log line names a masked recipient
and the subject, and a failure's text names the server and the reason, never the
body.
"""

from __future__ import annotations

import logging
import ssl
from email.message import EmailMessage
from email.utils import getaddresses
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from core.settings import Settings

log = logging.getLogger("mgw.mail")

TLS_MODES = ("none", "starttls", "tls")
_REASON_MAX = 200


class MailError(Exception):
    """A message could not be handed to the mail server. The text holds the server,
    the masked recipients and the reason; never the message body."""


class Mailer(Protocol):
    """Hands one message to a mail server, or raises ``MailError``."""

    async def send(self, msg: EmailMessage) -> None: ...


class SmtpMailer:
    """One SMTP connection per message: identity mail is rare, and a fresh connection
    has no idle state to lose to a server's timeout.

    ``tls``: ``"none"`` (plain, and no opportunistic STARTTLS: a server offering it
    with a certificate nobody can verify would fail every mail), ``"starttls"``
    (upgrade after connecting, usually port 587) or ``"tls"`` (TLS from the first byte,
    usually port 465). ``tls_context`` replaces the system trust store.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tls: str = "none",
        user: str | None = None,
        password: str | None = None,
        timeout: float = 10,
        *,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {', '.join(TLS_MODES)}, got {tls!r}")
        if password is not None and user is None:
            raise ValueError("an SMTP password needs a user")
        self.host = host
        self.port = port
        self.tls = tls
        self.user = user
        self._password = password
        self.timeout = timeout
        self.tls_context = tls_context

    def __repr__(self) -> str:  # no password
        return f"SmtpMailer({self.host!r}, {self.port}, tls={self.tls!r}, user={self.user!r})"

    async def send(self, msg: EmailMessage) -> None:
        import aiosmtplib  # lazily: only processes that send mail pay for the import

        to = _masked_recipients(msg)
        try:
            await aiosmtplib.send(
                msg,
                hostname=self.host,
                port=self.port,
                username=self.user,
                password=self._password if self.user is not None else None,
                use_tls=self.tls == "tls",
                start_tls=self.tls == "starttls",
                tls_context=self.tls_context,
                timeout=self.timeout,
            )
        except (aiosmtplib.SMTPException, OSError, ValueError) as exc:  # OSError: timeouts too
            # `from None`: the driver's exceptions name full addresses; ours masks them
            raise MailError(
                f"mail to {to} via {self.host}:{self.port} failed: {_reason(exc)}"
            ) from None
        log.info("mail to %s subject %s sent", to, msg.get("Subject", ""))


def mailer_from_settings(settings: Settings) -> Mailer | None:
    """The SMTP mailer MGW_SMTP_* describe, or ``None`` without MGW_SMTP_HOST (then
    ``mgw up`` points one at its local sink: ``mgw.mailsink.mailer_for_up``)."""
    ident = settings.identity
    if not ident.smtp_host:
        return None
    return SmtpMailer(
        ident.smtp_host,
        ident.smtp_port,
        ident.smtp_tls,
        ident.smtp_user,
        ident.smtp_password,
    )


def mask_address(address: str) -> str:
    """``alice@example.com`` -> ``a***@example.com``: enough to tell mails apart in a
    log, not enough to harvest addresses from it."""
    local, at, domain = address.strip().rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def _masked_recipients(msg: EmailMessage) -> str:
    headers = [str(v) for name in ("To", "Cc", "Bcc") for v in msg.get_all(name, [])]
    addresses = [addr for _, addr in getaddresses(headers) if addr]
    return ", ".join(mask_address(a) for a in addresses) or "(no recipient)"


def _reason(exc: BaseException) -> str:
    import aiosmtplib

    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = sorted({r.code for r in exc.recipients})
        reason = f"every recipient refused ({', '.join(map(str, codes))})"
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        # the server's reply; SMTPSenderRefused/RecipientRefused also carry the address
        reason = f"{type(exc).__name__}: {exc.code} {exc.message}"
    else:
        reason = f"{type(exc).__name__}: {exc}"
    reason = " ".join(reason.split())  # a multi-line server reply stays one log line
    return reason[:_REASON_MAX]
