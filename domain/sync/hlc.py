"""Hybrid logical clock stamps (Kulkarni et al., 2014).

A stamp is (wall ms, logical counter, node). A device's op is stamped from the time the
device says it made it (``at``): an edit made offline at 10:00 and synced at 10:10 sorts
before an edit another device made online at 10:05, which is what "last writer" means to
the person holding both. The server's own clock observes every stamp it accepts, so a
command it stamps itself sorts after anything it has seen, even if its physical clock
lags a device's. A device clock too far ahead would win every conflict for as long as
it stays ahead; stamps more than ``max_skew_ms`` ahead are refused.
"""

from __future__ import annotations

from dataclasses import dataclass

#: how far a device's clock may run ahead of the server's before its writes are refused
MAX_SKEW_MS = 60_000
_WALL_DIGITS = 13  # milliseconds since 1970 fit in 13 digits until the year 2286
_LOGICAL_DIGITS = 6
#: the range the text form keeps in order; a clock never leaves it (see HybridClock.now)
MAX_WALL_MS = 10**_WALL_DIGITS - 1
MAX_LOGICAL = 10**_LOGICAL_DIGITS - 1


class ClockSkew(ValueError):
    """A stamp from further in the future than the clock accepts."""


@dataclass(frozen=True, slots=True, order=True)
class Stamp:
    wall_ms: int
    logical: int
    #: the device that wrote; breaks ties the same way on every replica
    node: str

    def encode(self) -> str:
        """Text whose byte order is the stamp order (fixed-width numbers first)."""
        if not (0 <= self.wall_ms <= MAX_WALL_MS and 0 <= self.logical <= MAX_LOGICAL):
            raise ValueError(f"stamp out of the encodable range: {self}")
        return f"{self.wall_ms:0{_WALL_DIGITS}d}.{self.logical:0{_LOGICAL_DIGITS}d}.{self.node}"

    @classmethod
    def decode(cls, text: str) -> Stamp:
        wall, logical, node = text.split(".", 2)
        if len(wall) != _WALL_DIGITS or len(logical) != _LOGICAL_DIGITS:
            raise ValueError(f"not a stamp: {text!r}")
        return cls(int(wall), int(logical), node)


class HybridClock:
    """One replica's clock. ``physical_ms`` is passed in, so the logic stays pure."""

    def __init__(self, node: str, *, max_skew_ms: int = MAX_SKEW_MS) -> None:
        self.node = node
        self.max_skew_ms = max_skew_ms
        self.wall_ms = 0
        self.logical = 0

    def now(self, physical_ms: int) -> Stamp:
        """A stamp for a write made here: after every stamp this clock issued or saw."""
        if physical_ms > self.wall_ms:
            self.wall_ms, self.logical = physical_ms, 0
        elif self.logical < MAX_LOGICAL:
            self.logical += 1
        else:  # a million stamps in one millisecond: borrow the next one, stay in order
            self.wall_ms, self.logical = self.wall_ms + 1, 0
        return Stamp(self.wall_ms, self.logical, self.node)

    def check(self, remote_wall_ms: int, physical_ms: int) -> None:
        if remote_wall_ms > physical_ms + self.max_skew_ms:
            ahead = (remote_wall_ms - physical_ms) / 1000
            raise ClockSkew(
                f"the device clock is {ahead:.0f} s ahead of the server's"
                f" (at most {self.max_skew_ms / 1000:.0f} s accepted); correct the clock"
            )

    def observe(self, remote: Stamp, physical_ms: int) -> None:
        """Take a remote stamp into account: later local stamps sort after it."""
        self.check(remote.wall_ms, physical_ms)
        if (remote.wall_ms, remote.logical) > (self.wall_ms, self.logical):
            self.wall_ms, self.logical = remote.wall_ms, remote.logical


def device_stamp(at_ms: int, index: int, device: str) -> Stamp:
    """The stamp of the ``index``-th op of a device's batch, made at its clock's ``at_ms``:
    ops a device made in the same millisecond keep the order it sent them in."""
    return Stamp(at_ms, index, device)
