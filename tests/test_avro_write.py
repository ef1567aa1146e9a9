"""core/avro_write.py writes fastavro's bytes, and refuses what it does not take."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest

from core.avro_write import Unsupported, compile_writer
from core.codec import default_codec
from domain.catalog import PLATFORMS
from streams.feeds import FeedIngest, IngestSummary

FEEDS = Path(__file__).parent / "fixtures" / "feeds"


def _schema(event_type: str) -> dict:  # type: ignore[type-arg]
    return json.loads(default_codec().current(event_type).path.read_text())


def _fastavro(schema: dict, record: object) -> bytes:  # type: ignore[type-arg]
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(schema), record)
    return buf.getvalue()


class _Pub:
    codec = default_codec()


def _feed_events() -> list:  # type: ignore[type-arg]
    events = []
    for platform in PLATFORMS:
        path = next(FEEDS.glob(f"{platform}.*"))
        feed = FeedIngest(None, _Pub, platform)  # type: ignore[arg-type]
        summary = IngestSummary(platform)
        records = feed.parse(io.BytesIO(path.read_bytes()), path.name, summary)
        events += feed.changes(records, summary, full_feed=False, producer="test")
    return events


def test_catalog_feed_events_encode_to_fastavros_bytes() -> None:
    events = _feed_events()
    kinds = {e.event_type for e in events}
    assert kinds == {"PlatformTitleObserved", "AvailabilityChanged"}
    writers = {k: compile_writer(_schema(k)) for k in kinds}
    stamps = 0
    for e in events:
        w = writers[e.event_type]
        assert w is not None
        assert w(e.payload) == _fastavro(_schema(e.event_type), e.payload), e.payload
        stamps += sum(o["available_from"] is not None for o in e.payload.get("offers", ()))
    assert stamps > 0  # the fixtures exercise timestamps


def _resolved(**fields: Any) -> tuple[dict[str, Any], Any, dict[str, Any]]:
    """ContentResolved's schema, its compiled writer and a valid record with ``fields``."""
    schema = _schema("ContentResolved")
    w = compile_writer(schema)
    assert w is not None
    record: dict[str, Any] = {f["name"]: None for f in schema["fields"]}
    record.update(content_id="c", method="title", raw_hash="h", kind="movie", genres=[])
    record.update(fields)
    return schema, w, record


def test_edge_values_encode_like_fastavro() -> None:
    schema, w, base = _resolved(platform="netflix", platform_id="n1", title="Amélie — 天国")
    cases = [
        {},
        {"score": 93.5, "year": -1, "runtime_min": 2**31 - 1, "genres": ("Drama", "Crime")},
        {"score": 0.0, "year": 0, "season": 63, "episode": 64, "overview": ""},
        {"runtime_min": -(2**31), "original_title": "x" * 300},
    ]
    for over in cases:
        record = {**base, **over}
        assert w(record) == _fastavro(schema, record), over
    offers = _schema("AvailabilityChanged")
    wo = compile_writer(offers)
    assert wo is not None
    for at in (
        datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC),  # before the epoch
        datetime(2024, 3, 1, 12, 0, 0, 123999, tzinfo=timezone(timedelta(hours=-5))),
        datetime(2999, 1, 1, tzinfo=UTC),
    ):
        record = {
            "platform": "hulu", "platform_id": "h", "web_url": None, "app_url": "a://x",
            "raw_hash": "r",
            "offers": [{"region": "US", "offer_type": "rent", "quality": "UHD", "price": "1.5",
                        "currency": "USD", "available_from": at, "available_until": None}] * 2,
        }  # fmt: skip
        assert wo(record) == _fastavro(offers, record), at


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("year", True),  # a bool is not an int here
        ("year", 2**31),  # out of an int's range
        ("score", 93),  # an int where a double goes
        ("method", "guess"),  # not an enum symbol
        ("title", b"bytes"),
        ("genres", "Drama"),  # a string is not an array
    ],
)
def test_values_fastavro_should_judge_are_refused(field: str, value: object) -> None:
    _, w, record = _resolved(platform="p", platform_id="i", title="t")
    w(record)  # the base record is fine
    record[field] = value
    with pytest.raises(Unsupported):
        w(record)


def test_naive_timestamps_and_missing_fields_are_refused() -> None:
    w = compile_writer(_schema("AvailabilityChanged"))
    assert w is not None
    naive = datetime(2024, 1, 1)
    offer = {"region": "US", "offer_type": "rent", "quality": "HD", "price": None,
             "currency": None, "available_from": naive, "available_until": None}  # fmt: skip
    record = {"platform": "p", "platform_id": "i", "offers": [offer], "web_url": None,
              "app_url": None, "raw_hash": "h"}  # fmt: skip
    with pytest.raises(Unsupported):
        w(record)
    del record["app_url"]
    record["offers"] = []
    with pytest.raises(Unsupported):
        w(record)


def test_schemas_it_cannot_write_do_not_compile() -> None:
    assert compile_writer({"type": "record", "name": "M", "fields": [
        {"name": "m", "type": {"type": "map", "values": "string"}}]}) is None  # fmt: skip
    assert compile_writer({"type": "record", "name": "U", "fields": [
        {"name": "u", "type": ["null", "string", "int"]}]}) is None  # fmt: skip
