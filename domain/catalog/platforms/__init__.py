"""One normalizer per platform partner feed: native format in, PlatformRecords out.

Each module has the same surface: PLATFORM, MEDIA_TYPE, EXTENSION, `read(stream)` yielding
(locator, raw record or FeedError) and `normalize(raw)` returning the records in canonical
units. The formats are described in docs/feeds/.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from types import ModuleType
from typing import BinaryIO

from domain.catalog import PLATFORMS, FeedError, PlatformRecord, hash_raw
from domain.catalog.platforms import (
    apple_tv_plus,
    disney_plus,
    hbo_max,
    hulu,
    netflix,
    paramount_plus,
    peacock,
    prime_video,
)

NORMALIZERS: dict[str, ModuleType] = {
    m.PLATFORM: m
    for m in (
        netflix,
        prime_video,
        disney_plus,
        hbo_max,
        hulu,
        apple_tv_plus,
        paramount_plus,
        peacock,
    )
}
assert tuple(NORMALIZERS) == PLATFORMS, "one normalizer per platform, in PLATFORMS order"


def platform_module(name: str) -> ModuleType:
    try:
        return NORMALIZERS[name]
    except KeyError:
        raise FeedError(
            "platform", f"unknown platform {name!r}; expected one of: {', '.join(PLATFORMS)}"
        ) from None


def read_records(
    platform: str, stream: BinaryIO
) -> Iterator[tuple[str, PlatformRecord | FeedError]]:
    """Read and normalize a feed; a record that fails yields its FeedError with its locator
    and reading goes on. A file that cannot be read at all raises FeedError("file", ...)."""
    mod = platform_module(platform)
    normalize = mod.normalize
    for locator, raw in mod.read(stream):
        if isinstance(raw, FeedError):
            yield locator, raw
            continue
        try:
            records = normalize(raw)
        except FeedError as e:
            yield locator, e
            continue
        for record in records:
            if record.kind == "episode":
                record = _with_inherited_state(record)
            yield locator, record


def _with_inherited_state(record: PlatformRecord) -> PlatformRecord:
    """An episode's fragment hash misses what it inherits from its show (offers, links,
    language): fold those in, so a new window on the show counts as a change."""
    inherited = [
        record.raw_hash,
        record.language,
        record.web_url,
        record.app_url,
        [
            (o.region, o.offer_type, o.quality, o.price, o.currency,
             o.available_from, o.available_until)
            for o in record.offers
        ],
    ]  # fmt: skip
    return replace(record, raw_hash=hash_raw(inherited))
