"""streams/bulk_publish.py writes exactly what the codec writes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from core.codec import EncodeError, default_codec
from core.events import Event
from domain.catalog import Offer, PlatformRecord
from streams.bulk_publish import BulkEncoder
from streams.feeds import ended_event, record_events
from streams.publisher import Publisher


def _record(**over: object) -> PlatformRecord:
    fields: dict[str, object] = dict(
        platform="netflix", platform_id="n1", kind="movie", title="Héat (1995)",
        original_title=None, year=1995, runtime_min=170, genres=("Crime", "Drama"),
        overview="A heist.", language="en", imdb_id="tt0113277", tmdb_id=None,
        series_platform_id=None, season=None, episode=None, web_url="https://n/1",
        app_url=None, raw_hash="h1",
        offers=(
            Offer("US", "subscription", "UHD", None, None, None, None),
            Offer("GB", "rent", "HD", "3.99", "GBP",
                  datetime(2024, 1, 1, tzinfo=UTC), datetime(2030, 1, 1, tzinfo=UTC)),
        ),
    )  # fmt: skip
    fields.update(over)
    return PlatformRecord(**fields)  # type: ignore[arg-type]


def _events() -> list[Event]:
    out = record_events(_record(), None, "feed:netflix", "corr")
    out += record_events(
        _record(platform_id="e1", kind="episode", series_platform_id="s1", season=1,
                episode=2, offers=(), year=None, imdb_id=None),
        "Some Show", "feed:netflix", None,
    )  # fmt: skip
    out.append(ended_event("netflix", "n9", "dropped from feed", "feed:netflix"))
    return out


def test_bulk_encoder_writes_the_codecs_bytes() -> None:
    codec = default_codec()
    enc = BulkEncoder(codec)
    events = _events()
    assert {e.event_type for e in events} == {
        "PlatformTitleObserved", "AvailabilityChanged", "AvailabilityEnded"
    }  # fmt: skip
    for e in events:
        assert enc.encode(e.event_type, e.payload) == codec.encode(e.event_type, e.payload)
        assert enc.encode(e.event_type, e.payload) == codec.encode(e.event_type, e.payload)
    publisher = Publisher(None, codec)  # type: ignore[arg-type]
    for e in events:
        assert enc.record(e) == publisher.to_record(e)


def test_bulk_encoder_explains_a_bad_payload_as_the_codec_does() -> None:
    enc = BulkEncoder(default_codec())
    bad = dict(_events()[1].payload)
    bad["offers"] = [{**bad["offers"][0], "quality": "hd"}]  # not an enum symbol
    with pytest.raises(EncodeError, match="Quality"):
        enc.encode("AvailabilityChanged", bad)


def test_bulk_encoder_leaves_what_its_writer_refuses_to_fastavro() -> None:
    codec = default_codec()
    enc = BulkEncoder(codec)
    payload = dict(_events()[1].payload)
    # milliseconds where a datetime goes: fastavro takes them, the compiled writer does not
    payload["offers"] = [{**payload["offers"][0], "available_from": 1_700_000_000_000}]
    assert enc.encode("AvailabilityChanged", payload) == codec.encode(
        "AvailabilityChanged", payload
    )
