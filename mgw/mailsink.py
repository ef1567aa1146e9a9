"""The local SMTP sink `mgw up` runs when no MGW_SMTP_HOST is configured.

A real SMTP server (aiosmtpd, in its own thread) on 127.0.0.1 that delivers nowhere:
each message lands as ``<data dir>/mail/<timestamp>-<n>.eml`` (mode 0600: the mails
carry verification and reset links), ready to open in any mail client. The API sends
to it with the same ``SmtpMailer`` it uses for a real server, so the path from the
API to the wire is the one production takes.

The port is free and chosen at start, or MGW_SMTP_SINK_PORT.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from core.mail import Mailer, SmtpMailer, mailer_from_settings, mask_address

if TYPE_CHECKING:
    from aiosmtpd.controller import Controller

    from core.settings import Settings

log = logging.getLogger("mgw.mailsink")

HOST = "127.0.0.1"
PORT_VARIABLE = "MGW_SMTP_SINK_PORT"


class MailSink(NamedTuple):
    """A running sink; unpacks as ``(controller, host, port)``."""

    controller: Controller
    host: str
    port: int

    @property
    def directory(self) -> Path:
        handler: EmlWriter = self.controller.handler
        return handler.directory

    def stop(self) -> None:
        stop_mail_sink(self)


class EmlWriter:
    """aiosmtpd handler: one ``.eml`` file per message, nothing else."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        try:
            path = self.write(envelope.original_content or envelope.content)
        except OSError as exc:
            log.error("mail sink could not save a message in %s: %s", self.directory, exc)
            return "451 Requested action aborted: local error in processing"
        for rcpt in envelope.rcpt_tos:
            log.info("mail for %s saved to %s", mask_address(rcpt), path)
        return "250 Message accepted for delivery"

    def write(self, content: bytes) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        with self._lock:
            while True:  # O_EXCL: a second sink (or a restart) never overwrites a mail
                path = self.directory / f"{stamp}-{next(self._numbers)}.eml"
                try:
                    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                except FileExistsError:
                    continue
                break
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        return path


def start_mail_sink(data_dir: Path, port: int | None = None) -> MailSink:
    """Start the sink writing to ``<data_dir>/mail`` on 127.0.0.1:``port`` (a free
    port when ``None``). Stop it with :func:`stop_mail_sink` (or ``sink.stop()``)."""
    from aiosmtpd.controller import Controller

    directory = data_dir / "mail"
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    # aiosmtpd logs full recipient addresses at INFO and every DATA line (links and
    # their tokens) at DEBUG on "mail.log"; ours masks. Left alone if configured.
    aiosmtpd_log = logging.getLogger("mail.log")
    if aiosmtpd_log.level == logging.NOTSET:
        aiosmtpd_log.setLevel(logging.WARNING)
    chosen = _free_port() if port is None else port
    if port is not None and not _port_free(port):
        raise OSError(errno.EADDRINUSE, f"mail sink: {HOST}:{port} is already in use")
    controller = Controller(
        EmlWriter(directory),
        hostname=HOST,
        port=chosen,
        server_hostname="mgw-mail-sink",
        ident="mgw mail sink",
    )
    try:
        controller.start()
    except BaseException:
        # a failed bind leaves the controller's loop open: close it, no ResourceWarning
        if not controller.loop.is_closed() and not controller.loop.is_running():
            controller.loop.close()
        raise
    log.info("mail sink on %s:%d saves mail to %s", HOST, chosen, directory)
    return MailSink(controller, HOST, chosen)


def stop_mail_sink(sink: MailSink) -> None:
    sink.controller.stop()


@contextlib.contextmanager
def mail_for_up(
    settings: Settings, env: Mapping[str, str] | None = None
) -> Iterator[tuple[Mailer, str]]:
    """The mailer `mgw up` gives the API, and where mail goes (for the start-up log).

    With MGW_SMTP_HOST: the configured server. Without: a sink started here (port from
    MGW_SMTP_SINK_PORT in ``env``, default ``os.environ``) and stopped on exit.
    """
    configured = mailer_from_settings(settings)
    if configured is not None:
        ident = settings.identity
        yield configured, f"smtp://{ident.smtp_host}:{ident.smtp_port} ({ident.smtp_tls})"
        return
    raw = (os.environ if env is None else env).get(PORT_VARIABLE) or ""
    try:
        port = int(raw) if raw.strip() else None
    except ValueError:
        raise ValueError(f"{PORT_VARIABLE} must be an integer, got {raw!r}") from None
    sink = start_mail_sink(settings.data_dir, port)
    try:
        yield (
            SmtpMailer(sink.host, sink.port, "none"),
            f"smtp://{sink.host}:{sink.port} (sink: {sink.directory})",
        )
    finally:
        sink.stop()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True
