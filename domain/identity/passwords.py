"""Password hashing (argon2id) and the password policy.

Hashes are argon2id PHC strings (``$argon2id$v=19$m=...,t=...,p=...$salt$hash``): the
parameters travel with each hash, so raising them later needs no migration; a sign-in
that verifies against an older hash sees ``needs_rehash`` and stores a fresh one.
``calibrate`` measures this machine so the cost is chosen, not guessed.

Every password is NFKC-normalised before hashing and before the policy counts its
length: the same password typed on a keyboard that composes "é" and on one that sends
"e" + combining accent, or with full-width digits, hashes the same.

The policy follows NIST SP 800-63B: a length floor (12) and ceiling (128), no
composition rules, and a block list of passwords known from breaches (Django's 20,000
common passwords, bundled in ``data/``; SOURCE.md says where it came from), plus the
user's own email name or display name.

Unknown accounts must cost as much as wrong passwords, or sign-in timing tells an
attacker which emails are registered: ``dummy_verify`` runs one verification against a
fixed hash made with the same parameters.
"""

from __future__ import annotations

import gzip
import time
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 12
MAX_LENGTH = 128
#: inputs longer than this are refused by ``verify`` without hashing (no stored password
#: can be that long, and argon2 would still read every byte)
_VERIFY_MAX_CHARS = 1024
#: a name shorter than this is too common a substring to forbid inside a password
_MIN_NAME_CHARS = 4
#: OWASP's floor for argon2id at t=2 is 19 MiB; calibrate never goes below it
_MIN_MEMORY_KIB = 19456
_MAX_MEMORY_KIB = 1 << 20


@dataclass(frozen=True, slots=True)
class Argon2Params:
    time_cost: int
    memory_kib: int
    parallelism: int


def normalize_password(password: str) -> str:
    """NFKC: the form every password is counted, hashed and compared in."""
    return unicodedata.normalize("NFKC", password)


class Passwords:
    """argon2id hashing with one set of parameters."""

    def __init__(self, params: Argon2Params) -> None:
        self.params = params
        self._hasher = PasswordHasher(
            time_cost=params.time_cost,
            memory_cost=params.memory_kib,
            parallelism=params.parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._dummy_hash: str | None = None

    def hash(self, password: str) -> str:
        return self._hasher.hash(normalize_password(password))

    def verify(self, phc: str, password: str) -> bool:
        """True when ``password`` matches; False for a wrong password or a broken hash."""
        if len(password) > _VERIFY_MAX_CHARS:
            return False
        try:
            return self._hasher.verify(phc, normalize_password(password))
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, phc: str) -> bool:
        """True when ``phc`` was made with other parameters (or is not a usable hash)."""
        try:
            return self._hasher.check_needs_rehash(phc)
        except (InvalidHashError, ValueError):
            return True

    def dummy_verify(self, password: str) -> None:
        """Spend the time of one verification, for a sign-in whose account does not exist."""
        if self._dummy_hash is None:
            # made once per instance; the first unknown-account sign-in pays for it
            self._dummy_hash = self._hasher.hash("mgw dummy password, never matches")
        self.verify(self._dummy_hash, password)


#: memory sizes tried, smallest first: whole MiB from RFC 9106's 19 MiB floor upwards
_MEMORY_STEPS = (19456, 30720, 47104, 65536, 131072)


def calibrate(target_ms: float = 50.0, parallelism: int = 1) -> Argon2Params:
    """argon2id parameters that take about ``target_ms`` per hash on this machine.

    The most memory that still leaves at least two passes inside the target (memory is
    what makes guessing on GPUs expensive), then as many passes as fit. Time is not
    linear in memory: past the CPU's cache it jumps (here 30 MiB took 31 ms for two
    passes and 40 MiB 63 ms), so each size is measured, not extrapolated.
    """
    best = Argon2Params(2, _MIN_MEMORY_KIB, parallelism)
    for memory in _MEMORY_STEPS:
        per_pass = _measure(Argon2Params(2, memory, parallelism)) / 2
        passes = int(target_ms / per_pass + 0.25)  # round up from three quarters
        if passes < 2:
            break
        best = Argon2Params(min(passes, 10), memory, parallelism)
    return best


def _measure(params: Argon2Params, runs: int = 3) -> float:
    """Milliseconds per hash: the best of ``runs`` (the least disturbed by other work)."""
    hasher = Passwords(params)
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        hasher.hash("calibration password")
        best = min(best, (time.perf_counter() - start) * 1000.0)
    return max(best, 1e-3)


class PasswordRejected(ValueError):
    """A password the policy refuses; ``field`` names the request field to blame."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.field = "password"


def check_password(
    password: str, *, email: str | None = None, display_name: str | None = None
) -> None:
    """Raise ``PasswordRejected`` unless ``password`` meets the policy."""
    normalized = normalize_password(password)
    if len(normalized) < MIN_LENGTH:
        raise PasswordRejected(f"passwords need at least {MIN_LENGTH} characters")
    if len(normalized) > MAX_LENGTH:
        raise PasswordRejected(f"passwords can have at most {MAX_LENGTH} characters")
    folded = normalized.lower()
    if folded in common_passwords():
        raise PasswordRejected(
            "this password is on a list of common passwords seen in breaches; choose another"
        )
    for name in _personal_names(email, display_name):
        if name in folded:
            raise PasswordRejected("passwords cannot contain your email name or display name")


def _personal_names(email: str | None, display_name: str | None) -> list[str]:
    """Lower-cased names a password may not contain: the email's local part (and the part
    before a ``+tag``) and the display name (also with its spaces removed)."""
    names: list[str] = []
    if email and "@" in email:
        local = normalize_password(email.rsplit("@", 1)[0]).lower()
        names += [local, local.split("+", 1)[0]]
    if display_name:
        name = " ".join(normalize_password(display_name).lower().split())
        names += [name, name.replace(" ", "")]
    return [n for n in dict.fromkeys(names) if len(n) >= _MIN_NAME_CHARS]


@cache
def common_passwords() -> frozenset[str]:
    """The bundled breached/common passwords, lower-cased; read once on first use."""
    data = resources.files("domain.identity") / "data" / "common-passwords.txt.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return frozenset(stripped for line in lines if (stripped := line.strip().lower()))
