"""Signing keys and the server secret on disk.

The keys directory (``MGW_KEYS_DIR``, default ``<data dir>/keys``) holds:

    signing/<kid>.pem   one ES256 private key per file (PKCS#8, 0600); the newest signs,
                        all of them verify
    secret.key          32 random bytes (0600) every derived key comes from, unless
                        MGW_SECRET_KEY gives them

Rotation writes a new key and leaves the old ones: tokens they signed keep verifying
until they expire, and ``retire`` removes keys beyond the newest few afterwards. Every
process that verifies tokens reads the same directory, so the first start creates the
first key under a file lock: two processes starting together agree on one key.

Key files are named ``<kid>.pem``; names with characters outside ``[A-Za-z0-9._-]`` are
ignored. "Newest" is the file's modification time, then the kid (generated kids sort by age);
``rotate`` makes sure its file is strictly newer than every other even on file systems
with coarse timestamps.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

from domain.identity.tokens import (
    KeySet,
    SigningKey,
    load_private_pem,
    new_signing_key,
    private_pem,
)

_KID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_SECRET_BYTES = 32


class KeyStore:
    """The ES256 signing keys under ``directory/signing``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.signing_dir = self.directory / "signing"

    def load_or_create(self) -> KeySet:
        """Every key on disk, the newest active; the first key is created if there is none."""
        keys = self._load()
        if not keys:
            with self._locked():
                keys = self._load()  # another process may have created it meanwhile
                if not keys:
                    self._write(new_signing_key())
                    keys = self._load()
        return KeySet.of(keys[-1], keys[:-1])

    def rotate(self) -> SigningKey:
        """Write a new key; from now on it is the active one (the old ones still verify)."""
        with self._locked():
            key = new_signing_key()
            self._write(key)
            return key

    def retire(self, keep: int = 2) -> list[str]:
        """Remove all but the newest ``keep`` keys; returns the kids removed."""
        if keep < 1:
            raise ValueError("keep at least one key (the active one)")
        with self._locked():
            paths = self._paths()
            removed = paths[:-keep] if len(paths) > keep else []
            for path in removed:
                path.unlink()
            return [path.stem for path in removed]

    def _paths(self) -> list[Path]:
        """Key files, oldest first."""
        if not self.signing_dir.is_dir():
            return []
        paths = [p for p in self.signing_dir.glob("*.pem") if _KID.fullmatch(p.stem)]
        return sorted(paths, key=lambda p: (p.stat().st_mtime_ns, p.stem))

    def _load(self) -> list[SigningKey]:
        return [load_private_pem(path.stem, path.read_bytes()) for path in self._paths()]

    def _write(self, key: SigningKey) -> None:
        if not _KID.fullmatch(key.kid):
            raise ValueError(f"kid {key.kid!r} cannot be a file name")
        newest = max((p.stat().st_mtime_ns for p in self._paths()), default=0)
        path = self.signing_dir / f"{key.kid}.pem"
        _write_private(path, private_pem(key))
        written = path.stat().st_mtime_ns
        if written <= newest:  # coarse clock or a skewed one: be newer than every other key
            os.utime(path, ns=(newest + 1, newest + 1))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        _make_private_dir(self.directory)
        _make_private_dir(self.signing_dir)
        fd = os.open(self.directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def server_secret(directory: Path, configured_b64: str | None) -> bytes:
    """The 32-byte server secret: ``configured_b64`` (MGW_SECRET_KEY) if given, else
    ``directory/secret.key``, created with random bytes on first use."""
    if configured_b64:
        return decode_secret(configured_b64)
    path = Path(directory) / "secret.key"
    if not path.exists():
        _make_private_dir(path.parent)
        try:
            _write_private(path, secrets.token_bytes(_SECRET_BYTES), exclusive=True)
        except FileExistsError:
            pass  # another process created it first; read theirs
    data = path.read_bytes()
    if len(data) != _SECRET_BYTES:
        raise ValueError(f"{path} must hold exactly {_SECRET_BYTES} bytes, it has {len(data)}")
    return data


def decode_secret(text: str) -> bytes:
    raw = text.strip()
    try:
        # standard or URL-safe alphabet, padding optional
        data = base64.b64decode(
            raw.replace("-", "+").replace("_", "/") + "=" * (-len(raw) % 4), validate=True
        )
    except (binascii.Error, ValueError) as exc:
        raise ValueError("MGW_SECRET_KEY must be base64 (of 32 random bytes)") from exc
    if len(data) != _SECRET_BYTES:
        raise ValueError(
            f"MGW_SECRET_KEY must be base64 of exactly {_SECRET_BYTES} bytes, got"
            f" {len(data)} bytes (make one with: openssl rand -base64 32)"
        )
    return data


def _make_private_dir(path: Path) -> None:
    """Create ``path`` readable by this user only (its parents with the default mode); an
    existing directory keeps its mode (an operator may have chosen it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass


def _write_private(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` with mode 0600, whole or not at all (readers never see a
    partial file). ``exclusive``: FileExistsError if ``path`` exists, else replace it."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # atomic, and fails if another process got there first
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
