"""User codes for the device authorization grant (RFC 8628).

A TV shows a short code and the user types it on a phone. RFC 8628 §6.1 suggests 8
characters of 20 consonants (``BCDFGHJKLMNPQRSTVWXZ``): about 34.5 bits, no vowels so no
words form, upper case only, shown as ``WDJB-MJHT``. Typing is forgiven: case, spaces and
dashes do not matter. Brute force is bounded elsewhere (codes expire in minutes and
entry is rate limited).
"""

from __future__ import annotations

import secrets

USER_CODE_ALPHABET = "BCDFGHJKLMNPQRSTVWXZ"
USER_CODE_LENGTH = 8


def new_user_code() -> str:
    """8 random characters, unformatted (the form to store and compare)."""
    return "".join(secrets.choice(USER_CODE_ALPHABET) for _ in range(USER_CODE_LENGTH))


def format_user_code(code: str) -> str:
    """``WDJBMJHT`` as ``WDJB-MJHT``, for display."""
    half = USER_CODE_LENGTH // 2
    return f"{code[:half]}-{code[half:]}"


def normalize_user_code(typed: str) -> str | None:
    """The stored form of a typed user code, or None if it cannot be one."""
    if len(typed) > 64:
        return None
    code = "".join(typed.upper().split()).replace("-", "")
    if len(code) != USER_CODE_LENGTH or any(ch not in USER_CODE_ALPHABET for ch in code):
        return None
    return code
