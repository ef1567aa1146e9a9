"""Run a program on an emulated x86-64 CPU that has AVX2 but no AVX-512.

``qemu-x86_64 -cpu Haswell PROGRAM`` (Debian package ``qemu-user``) runs an x86-64 Linux program
under QEMU's TCG with a Haswell CPU model: CPUID reports AVX2 (and FMA, BMI2, F16C) but no
AVX-512, and TCG cannot execute an AVX-512 instruction at all. Code that dispatches on CPUID at
run time takes its AVX2 path; code compiled with unconditional AVX-512 dies with SIGILL, which
qemu reports as ``qemu: uncaught target signal 4 (Illegal instruction)`` before killing itself
with the same signal. Children a program *forks* stay emulated (PostgreSQL's backends do);
programs it *execs* run natively.

See docs/portability.md.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

QEMU = "qemu-x86_64"
#: AVX2, FMA, BMI2, F16C, no AVX-512: the oldest CPU generation `make test` promises to run on
CPU = "Haswell"
MISSING = (
    f"{QEMU} is not installed: `make test` installs it (Debian package qemu-user, "
    "`make qemu`); the portability tests need it to run binaries on a CPU without AVX-512"
)

# qemu-x86_64: warning: TCG doesn't support requested feature: CPUID.01H:ECX.pcid [bit 17]
_TCG_WARNING = re.compile(
    r"^qemu-x86_64: warning: TCG doesn't support requested feature: .*\n?", re.M
)
_SIGILL_TEXT = "uncaught target signal 4"


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str  # without qemu's TCG feature warnings

    @property
    def sigill(self) -> bool:
        return killed_by_sigill(self.returncode, self.stderr)


def find_qemu() -> str | None:
    """Path of qemu-x86_64, or None."""
    return shutil.which(QEMU)


def require_qemu() -> str:
    path = find_qemu()
    if path is None:
        raise FileNotFoundError(MISSING)
    return path


def emulated(argv: Sequence[str | os.PathLike[str]]) -> list[str]:
    """``argv`` prefixed to run under qemu with the AVX2-only CPU model. No core dumps:
    qemu would write each crash's into the working directory."""
    return ["/bin/sh", "-c", 'ulimit -c 0 && exec "$@"', "sh", require_qemu(), "-cpu", CPU] + [
        str(a) for a in argv
    ]


def filter_warnings(text: str) -> str:
    """Drop qemu's harmless "TCG doesn't support requested feature" lines."""
    return _TCG_WARNING.sub("", text)


def killed_by_sigill(returncode: int | None, stderr: str = "") -> bool:
    """Did the program die of an illegal instruction? (qemu's message, -4 from subprocess,
    or 132 = 128 + 4 through a shell)."""
    return (
        _SIGILL_TEXT in stderr or returncode == -signal.SIGILL or returncode == 128 + signal.SIGILL
    )


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
    cwd: str | os.PathLike[str] | None = None,
    user: str | int | None = None,
    input: str | None = None,
) -> Result:
    """Run ``argv`` under the emulated CPU and wait; ``env`` replaces the environment
    (default: this process's, passed through)."""
    proc = subprocess.run(
        emulated(argv),
        env=dict(os.environ if env is None else env),
        cwd=cwd,
        user=user,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, filter_warnings(proc.stderr))


def start(
    argv: Sequence[str | os.PathLike[str]],
    *,
    log: IO[Any] | int | None = subprocess.DEVNULL,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    user: str | int | None = None,
) -> subprocess.Popen[bytes]:
    """Start a long-running program (a server) under the emulated CPU; stdout and stderr
    go to ``log``. The caller stops it (see :func:`stop`)."""
    return subprocess.Popen(
        emulated(argv),
        env=dict(os.environ if env is None else env),
        cwd=cwd,
        user=user,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def stop(proc: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal a started program and wait for it; kill it if it does not exit in time."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def read_log(path: Path) -> str:
    return filter_warnings(path.read_text(errors="replace")) if path.exists() else ""
