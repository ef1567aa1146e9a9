"""One normalizer per platform partner feed: native format in, PlatformRecords out.

Each module has the same surface: PLATFORM, MEDIA_TYPE, EXTENSION, `read(stream)` yielding
(locator, raw record or FeedError) and `normalize(raw)` returning the records in canonical
units. The formats are described in docs/feeds/.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import BinaryIO

from domain.catalog import PLATFORMS, FeedError, PlatformRecord
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
            yield locator, record
