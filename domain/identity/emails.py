"""Email addresses and the mails identity sends: verification, password reset, notice.

Addresses are compared case-insensitively (one account per email, whatever the case it
was typed in), so :func:`normalize_email` lower-cases the whole address, local part
included. RFC 5321 lets a server treat ``Alice@`` and ``alice@`` as different
mailboxes; practically none does, and treating them as one closes the door on a second
account for the same inbox. The stored, normalized form is also where mail goes.

The accepted syntax is deliberately narrower than RFC 5322: no quoted local parts, no
comments, no spaces or control characters, and none of the characters that separate
or delimit addresses in a header (``,;:<>()[]\\"``), so a normalized address is always
exactly one recipient when it lands in a ``To:`` header.

The messages are plain text with a simple HTML alternative. The link in a verification
or reset mail is the only secret in it (it carries the token): whoever sends or logs a
message must never write its body anywhere but to the recipient (``core/mail.py``).
"""

from __future__ import annotations

import html
import textwrap
import unicodedata
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

MAX_ADDRESS = 254  # RFC 5321 path limit (256) minus the angle brackets
MAX_LOCAL = 64
_DISPLAY_NAME_MAX = 64
_SMTP_LINE_MAX = 998  # RFC 5321 4.5.3.1.6, without CRLF
_SPECIALS = frozenset(',;:<>()[]\\"')
PRODUCT = "Media Gateway"


def normalize_email(raw: str) -> str:
    """The address as stored and compared: stripped and lower-cased.

    Raises ``ValueError`` with a message fit for the user when it is not an address.
    """
    value = raw.strip().lower()
    if not value:
        raise ValueError("email address is empty")
    if len(value) > MAX_ADDRESS:
        raise ValueError(f"email address is longer than {MAX_ADDRESS} characters")
    for ch in value:
        if ch.isspace() or unicodedata.category(ch).startswith(("C", "Z")):
            raise ValueError("email address contains spaces or control characters")
        if ch in _SPECIALS:
            raise ValueError(f"email address contains {ch!r}, which is not allowed")
    if value.count("@") != 1:
        raise ValueError("email address must contain exactly one @")
    local, domain = value.split("@")
    if not local:
        raise ValueError("email address has nothing before the @")
    if len(local) > MAX_LOCAL:
        raise ValueError(f"the part before the @ is longer than {MAX_LOCAL} characters")
    if local.startswith(".") or local.endswith(".") or ".." in local:
        raise ValueError("the part before the @ has a misplaced dot")
    if domain != "localhost" and "." not in domain:
        raise ValueError("the domain after the @ needs a dot (like example.com)")
    if any(not label for label in domain.split(".")):
        raise ValueError("the domain after the @ has an empty label")
    if any(label.startswith("-") or label.endswith("-") for label in domain.split(".")):
        raise ValueError("a domain label cannot start or end with a hyphen")
    return value


def verification_message(
    *,
    to: str,
    display_name: str,
    link: str,
    sender: str,
    expires_minutes: int,
    now: datetime | None = None,
) -> EmailMessage:
    """The mail asking a new account to confirm its address by opening ``link``."""
    name = _clean_name(display_name)
    when = _duration(expires_minutes)
    text = (
        f"Hi {name or 'there'},\n\n"
        f"please confirm your email address for {PRODUCT} by opening this link:\n\n"
        f"{link}\n\n"
        f"The link works once and expires in {when}.\n"
        "If you did not create an account, ignore this mail: nothing happens without "
        "the link.\n"
    )
    body = (
        f"<p>Hi {html.escape(name or 'there')},</p>"
        f"<p>please confirm your email address for {PRODUCT}:</p>"
        f"{_button(link, 'Confirm my email address')}"
        f"<p>The link works once and expires in {when}.<br>"
        "If you did not create an account, ignore this mail: nothing happens without "
        "the link.</p>"
    )
    return _message(
        to=to,
        display_name=name,
        sender=sender,
        subject=f"Confirm your email address for {PRODUCT}",
        text=text,
        html_body=body,
        now=now,
        link=link,
    )


def reset_message(
    *,
    to: str,
    display_name: str,
    link: str,
    sender: str,
    expires_minutes: int = 30,
    now: datetime | None = None,
) -> EmailMessage:
    """The mail carrying a password-reset link."""
    name = _clean_name(display_name)
    when = _duration(expires_minutes)
    text = (
        f"Hi {name or 'there'},\n\n"
        f"someone asked to reset the password of your {PRODUCT} account. "
        "To choose a new password, open this link:\n\n"
        f"{link}\n\n"
        f"The link works once and expires in {when}. Setting a new password signs "
        "out every session.\n"
        "If you did not ask for this, ignore this mail: your password stays as it is.\n"
    )
    body = (
        f"<p>Hi {html.escape(name or 'there')},</p>"
        f"<p>someone asked to reset the password of your {PRODUCT} account.</p>"
        f"{_button(link, 'Choose a new password')}"
        f"<p>The link works once and expires in {when}. Setting a new password signs "
        "out every session.<br>"
        "If you did not ask for this, ignore this mail: your password stays as it is.</p>"
    )
    return _message(
        to=to,
        display_name=name,
        sender=sender,
        subject=f"Reset your {PRODUCT} password",
        text=text,
        html_body=body,
        now=now,
        link=link,
    )


def password_changed_notice(
    *, to: str, display_name: str, sender: str, now: datetime | None = None
) -> EmailMessage:
    """The notice after a password change or reset. It carries no link: a mail that
    says "this wasn't you?" next to a link is what phishing looks like."""
    name = _clean_name(display_name)
    text = (
        f"Hi {name or 'there'},\n\n"
        f"the password of your {PRODUCT} account was changed, and every session "
        "was signed out.\n\n"
        'If that was you, there is nothing to do. If it was not, use "Forgot '
        'password" on the sign-in page right away to choose a new one.\n'
    )
    body = (
        f"<p>Hi {html.escape(name or 'there')},</p>"
        f"<p>the password of your {PRODUCT} account was changed, and every session "
        "was signed out.</p>"
        "<p>If that was you, there is nothing to do. If it was not, use "
        "<em>Forgot password</em> on the sign-in page right away to choose a new one.</p>"
    )
    return _message(
        to=to,
        display_name=name,
        sender=sender,
        subject=f"Your {PRODUCT} password was changed",
        text=text,
        html_body=body,
        now=now,
        link=None,
    )


def _message(
    *,
    to: str,
    display_name: str,
    sender: str,
    subject: str,
    text: str,
    html_body: str,
    now: datetime | None,
    link: str | None,
) -> EmailMessage:
    if link is not None and not link.startswith(("https://", "http://")):
        raise ValueError("mail links must be http(s) URLs")
    if link is not None and any(ch.isspace() or ch in "<>\"'" for ch in link):
        raise ValueError("mail links must not contain spaces, quotes or angle brackets")
    address = normalize_email(to)
    local, domain = address.split("@")
    _, sender_address = parseaddr(sender)
    sender_domain = sender_address.rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = Address(display_name=display_name, username=local, domain=domain)
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = make_msgid(domain=sender_domain)  # no getfqdn(): no DNS, no host name
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: autoresponders stay quiet
    _set_text(msg, text)
    msg.add_alternative(_html(subject, html_body), subtype="html")
    return msg


def _set_text(msg: EmailMessage, text: str) -> None:
    # Paragraphs wrapped at 76, the link alone on its line and never broken. ASCII text
    # goes as 7bit (lines up to SMTP's 998), so the link reads verbatim in the raw mail
    # (`mgw up` saves .eml files); anything else falls back to quoted-printable.
    lines = [
        wrapped
        for line in text.split("\n")
        for wrapped in (
            textwrap.wrap(line, 76, break_long_words=False, break_on_hyphens=False) or [""]
        )
    ]
    body = "\n".join(lines)
    if body.isascii() and all(len(line) <= _SMTP_LINE_MAX for line in lines):
        msg.set_content(body, cte="7bit")
    else:
        msg.set_content(body)


def _html(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family: sans-serif; line-height: 1.5">'
        f"{body}</body></html>\n"
    )


def _button(link: str, label: str) -> str:
    href = html.escape(link, quote=True)
    return (
        f'<p><a href="{href}" style="display: inline-block; padding: 8px 16px; '
        'background: #1a73e8; color: #ffffff; text-decoration: none; border-radius: 4px">'
        f"{html.escape(label)}</a></p>"
        f'<p style="font-size: small">Or paste this into your browser:<br>{href}</p>'
    )


def _clean_name(name: str) -> str:
    """A display name fit for a header and a greeting: control characters dropped,
    whitespace collapsed, length capped (the name is whatever the user typed)."""
    kept = "".join(ch for ch in name if not unicodedata.category(ch).startswith("C"))
    return " ".join(kept.split())[:_DISPLAY_NAME_MAX]


def _duration(minutes: int) -> str:
    if minutes <= 0:
        raise ValueError("a link must expire in a positive number of minutes")
    if minutes % (24 * 60) == 0:
        days = minutes // (24 * 60)
        return "1 day" if days == 1 else f"{days} days"
    if minutes % 60 == 0:
        hours = minutes // 60
        return "1 hour" if hours == 1 else f"{hours} hours"
    return "1 minute" if minutes == 1 else f"{minutes} minutes"
