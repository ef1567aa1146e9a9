"""Last-writer-wins register: the write with the greatest (stamp, op id) is the value.

A removal is a write of ``None`` (a tombstone), so "removed" and "never set" differ: the
tombstone has a stamp, and an older write arriving later cannot bring the value back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from domain.sync.hlc import Stamp


@dataclass(frozen=True, slots=True)
class Register:
    value: Any = None
    stamp: Stamp | None = None
    op_id: str = ""

    @property
    def deleted(self) -> bool:
        return self.stamp is not None and self.value is None

    def assign(self, value: Any, stamp: Stamp, op_id: str) -> Register:
        """The register after a write; itself when the write is older (or the same)."""
        if self.stamp is not None and (stamp, op_id) <= (self.stamp, self.op_id):
            return self
        return Register(value, stamp, op_id)

    def merge(self, other: Register) -> Register:
        if other.stamp is None:
            return self
        return self.assign(other.value, other.stamp, other.op_id)
