"""Observed-remove set (Shapiro et al., 2011), one element at a time.

Every add carries a unique tag (its op id). A remove names the tags it observed and
tombstones exactly those, so an add the remover had not seen (a concurrent add on another
device) survives, and an element comes back only through a new add. Tombstones are kept:
an add arriving after the remove that observed it (a device syncing late, a redelivery)
stays removed. Adds and removes commute and are idempotent, so any order of delivery,
with any duplicates, ends in the same state.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from domain.sync.hlc import Stamp


@dataclass(frozen=True, slots=True)
class Tag:
    tag: str
    stamp: Stamp
    #: the change sequence at which the replica stored the add (what a device can have seen)
    seq: int = 0


@dataclass(slots=True)
class ORElement:
    adds: dict[str, Tag] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)

    def add(self, tag: Tag) -> bool:
        """Record an add; True when it changed whether the element is present."""
        if tag.tag in self.adds:
            return False
        was = self.present
        self.adds[tag.tag] = tag
        return self.present != was

    def remove(self, tags: Iterable[str]) -> bool:
        """Tombstone the observed tags; True when it changed whether the element is present."""
        was = self.present
        self.removed.update(tags)
        return self.present != was

    def observed(self, saw: Callable[[Tag], bool]) -> set[str]:
        """The live tags a remover saw, by the rule the caller gives."""
        return {t for t, tag in self.adds.items() if t not in self.removed and saw(tag)}

    @property
    def live(self) -> list[Tag]:
        return sorted(
            (tag for t, tag in self.adds.items() if t not in self.removed),
            key=lambda t: (t.stamp, t.tag),
        )

    @property
    def present(self) -> bool:
        return any(t not in self.removed for t in self.adds)

    def merge(self, other: ORElement) -> None:
        for tag in other.adds.values():
            self.adds.setdefault(tag.tag, tag)
        self.removed |= other.removed


@dataclass(slots=True)
class ORSet:
    """A whole observed-remove set: element -> its adds and tombstones."""

    elements: dict[str, ORElement] = field(default_factory=dict)

    def element(self, key: str) -> ORElement:
        return self.elements.setdefault(key, ORElement())

    def add(self, key: str, tag: Tag) -> bool:
        return self.element(key).add(tag)

    def remove(self, key: str, tags: Iterable[str]) -> bool:
        return self.element(key).remove(tags)

    def value(self) -> frozenset[str]:
        return frozenset(k for k, e in self.elements.items() if e.present)

    def merge(self, other: ORSet) -> None:
        for k, e in other.elements.items():
            self.element(k).merge(e)
