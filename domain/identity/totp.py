"""Time-based one-time passwords (RFC 6238) and backup codes for the second factor.

Codes are the authenticator-app standard: SHA-1, 6 digits, 30-second steps. A code is
accepted for one step either side of now (clocks on phones drift), and only once per
step: ``verify_code`` returns the step it matched, the caller stores it, and a later
code for that step or an earlier one is refused, so a code read over a shoulder or
from a phishing page cannot be replayed inside its window.

Backup codes are for a lost phone: ten random codes, each spent once. They are 10
characters of an alphabet without look-alikes (no 0/o, 1/l/i), about 50 bits each, so
they survive being written on paper and typed back.
"""

from __future__ import annotations

import hmac
import io
import secrets

import pyotp
import segno

STEP_S = 30
DIGITS = 6
#: steps accepted either side of the current one
WINDOW = 1
BACKUP_ALPHABET = "23456789abcdefghjkmnpqrstuvwxyz"
BACKUP_LENGTH = 10


def new_secret() -> str:
    """A new shared secret: 32 base32 characters (160 bits, RFC 4226's recommendation)."""
    return pyotp.random_base32(length=32)


def provisioning_uri(secret: str, account_name: str, issuer: str = "Media Gateway") -> str:
    """The ``otpauth://totp/...`` URI authenticator apps read from the enrolment QR code."""
    return pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S).provisioning_uri(
        name=account_name, issuer_name=issuer
    )


def qr_svg(uri: str) -> str:
    """``uri`` as a QR code in SVG, dark on white (scannable on a dark-themed page too)."""
    out = io.BytesIO()
    # with its namespace (works as a file or data: URI) but no XML declaration (inlinable)
    segno.make(uri, error="m", micro=False).save(
        out, kind="svg", scale=4, dark="#000", light="#fff", xmldecl=False, svgns=True, nl=False
    )
    return out.getvalue().decode()


def current_step(now: float) -> int:
    return int(now // STEP_S)


def verify_code(secret: str, code: str, *, now: float, last_step: int | None) -> int | None:
    """The step ``code`` is valid for (within ±1 step of ``now``), or None.

    None also when that step is not after ``last_step``, the last step accepted for this
    secret: each code works once. Every candidate step is compared, in constant time, so
    the answer's timing does not tell which step matched."""
    typed = "".join(code.split())
    if len(typed) != DIGITS or not (typed.isascii() and typed.isdigit()):
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_S)
    now_step = current_step(now)
    matched: int | None = None
    for step in range(now_step - WINDOW, now_step + WINDOW + 1):
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected.encode(), typed.encode()) and (
            last_step is None or step > last_step
        ):
            matched = step
    return matched


def new_backup_codes(n: int = 10) -> list[str]:
    """``n`` fresh backup codes, formatted ``xxxxx-xxxxx`` for reading and typing."""
    codes: list[str] = []
    while len(codes) < n:
        raw = "".join(secrets.choice(BACKUP_ALPHABET) for _ in range(BACKUP_LENGTH))
        code = f"{raw[:5]}-{raw[5:]}"
        if code not in codes:
            codes.append(code)
    return codes


def normalize_backup_code(typed: str) -> str | None:
    """A typed backup code in its issued form (``xxxxx-xxxxx``), or None if it cannot be one.

    Case, spaces and dashes are forgiven. The result is the form to hash and compare:
    ``normalize_backup_code(c) == c`` for every code ``new_backup_codes`` made."""
    if len(typed) > 64:
        return None
    raw = "".join(typed.lower().split()).replace("-", "")
    if len(raw) != BACKUP_LENGTH or any(ch not in BACKUP_ALPHABET for ch in raw):
        return None
    return f"{raw[:5]}-{raw[5:]}"
