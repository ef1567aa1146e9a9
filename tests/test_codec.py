"""Avro single-object encoding: round trip, evolution, fingerprints, bad input."""

from __future__ import annotations

import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest

from core.codec import (
    MARKER,
    SCHEMA_ROOT,
    AvroCodec,
    EncodeError,
    MalformedEventError,
    UnknownSchemaError,
    fingerprint_of,
)
from core.topics import IDENTITY

FINGERPRINTS = SCHEMA_ROOT.parent / "fingerprints.txt"

PLAY = {
    "user_id": "u1",
    "content_id": "c1",
    "device_id": "tv",
    "position_s": 61.5,
    "duration_s": 5400.0,
    "occurred_at": datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
}


def _identity_sample(codec: AvroCodec, event_type: str) -> dict[str, Any]:
    """A payload with every field set, built from the schema: identity has many small events."""
    values: dict[str, Any] = {
        "string": "x",
        "boolean": True,
        "int": 7,
        "long": datetime(2026, 1, 2, tzinfo=UTC),
    }
    out: dict[str, Any] = {}
    for f in json.loads(codec.current(event_type).path.read_text())["fields"]:
        t = f["type"]
        if isinstance(t, list):
            t = t[1]
        if isinstance(t, dict):
            t = "array" if t["type"] == "array" else t["type"]
        out[f["name"]] = ["a", "b"] if t == "array" else values[t]
    return out


def _library_samples() -> dict[str, dict[str, Any]]:
    op = {"user_id": "u1", "op_id": "op-1", "device_id": "tv", "stamp": "1.0.tv"}
    title = {**op, "content_id": "c1"}
    return {
        "WatchlistItemAdded": title,
        "WatchlistItemRemoved": {**title, "seen": 42},
        "WatchRecorded": {
            **title, "watched_at": datetime(2026, 1, 2, tzinfo=UTC), "source": "playback"
        },
        "WatchesRemoved": {**title, "seen": None},
        "RatingSet": {**title, "rating": 8},
        "RatingRemoved": title,
        "ServicesSet": {
            **op, "region": "US", "platforms": ["netflix"], "offer_types": ["subscription"]
        },
        "LibrarySettingsSet": {
            **op, "min_resume_pct": 5.0, "watched_pct": 90.0, "min_play_s": 300.0
        },
        "UpNextHidden": title,
    }  # fmt: skip


def _session_samples() -> dict[str, dict[str, Any]]:
    at = datetime(2026, 1, 2, tzinfo=UTC)
    s = {"session_id": "s1", "user_id": "u1"}
    return {
        "PlaybackSessionStarted": {
            **s, "device_id": "tv", "content_id": "c1", "heartbeat_s": 30.0,
            "default_max_streams": 4, "occurred_at": at, "auth_session": "f1",
        },
        "PlaybackSessionHeartbeat": {**s, "occurred_at": at},
        "PlaybackSessionEnded": {**s, "reason": "expired", "occurred_at": at},
        "StreamLimitSet": {"user_id": "u1", "max_streams": 2, "set_by": "a1", "occurred_at": at},
    }  # fmt: skip


def _notification_samples() -> dict[str, dict[str, Any]]:
    return {
        "NotificationCreated": {
            "notification_id": "n1", "user_id": "u1", "kind": "available", "key": "c1",
            "content_id": "c1", "title": "Heat is now on Netflix", "body": "...",
            "data": {"platform": "netflix", "region": "US"},
        },
        "NotificationBroadcast": {
            "broadcast_id": "b1", "title": "Hello", "body": "News", "url": None, "sent_by": "a1",
        },
        "NotificationsRead": {"user_id": "u1", "ids": ["n1"], "all": False, "before_seq": 4},
        "NotificationPreferencesSet": {
            "user_id": "u1", "kinds": {"leaving": False}, "digest": "daily",
        },
        "NotificationDigestSent": {
            "user_id": "u1", "day": "2026-01-02", "through_seq": 4, "count": 2,
        },
        "NotificationDigestUnsubscribed": {"user_id": "u1"},
    }  # fmt: skip


def _ops_samples() -> dict[str, dict[str, Any]]:
    where = {"projector": "playback", "topic": "playback.events", "partition": 3, "offset": 17}
    return {
        "DeadLetterRetried": {
            **where, "outcome": "failed", "error": "KeyError: 'x'", "by": "a1", "note": "",
        },
        "DeadLetterSkipped": {**where, "by": "a1", "note": "test data"},
        "DeadLettersPurged": {"topic": None, "projector": "playback", "by": None, "note": ""},
    }  # fmt: skip


def _moderation_samples() -> dict[str, dict[str, Any]]:
    return {
        "TitleReported": {
            "report_id": "r1", "content_id": "c1", "user_id": "u1", "reason": "other",
            "note": "",
        },
        "ModerationDecided": {
            "decision_id": "d1", "content_id": "c1", "action": "edit", "admin_id": "a1",
            "note": "typo", "fields": {"year": "1999"},
        },
    }  # fmt: skip


def _command_samples() -> dict[str, dict[str, Any]]:
    c = {"command_id": "k1", "user_id": "u1", "device_id": "tv"}
    return {
        "DeviceCommandIssued": {
            **c, "command": "seek", "content_id": None, "position_s": 12.5,
            "from_device": "s1", "expires_at_ms": 1_767_312_000_000,
        },
        "DeviceCommandDelivered": {**c, "connection_id": "w1"},
        "DeviceCommandAcked": {**c, "connection_id": "w1"},
        "DeviceCommandExpired": {"command_id": "k1", "user_id": "u1"},
    }  # fmt: skip


def _activity_samples() -> dict[str, dict[str, Any]]:
    return {
        "ActivityRecorded": {
            "user_id": "u1", "event_id": "e1", "kind": "not_interested", "content_id": "c1",
            "surface": "recommendations", "device_id": "tv", "position": 3,
            "request_id": "r1", "occurred_at": datetime(2026, 1, 2, tzinfo=UTC),
        },
    }  # fmt: skip


def _experiment_samples() -> dict[str, dict[str, Any]]:
    variant = {"name": "control", "weight": 50, "params": "{}"}
    return {
        "ExperimentSet": {
            "key": "e1", "version": 1, "surface": "recommendations",
            "variants": [variant, {**variant, "name": "treatment", "params": '{"model":"ease"}'}],
            "primary_metric": "ctr", "guardrail_metrics": ["completion_rate"], "seed": "e1",
            "description": "", "set_by": None,
        },
        "ExperimentStarted": {"key": "e1", "version": 1, "started_by": "a1"},
        "ExperimentStopped": {"key": "e1", "reason": "sample ratio mismatch", "stopped_by": None},
        "ExperimentExposed": {
            "experiment": "e1", "user_id": "u1", "variant": "control", "version": 1,
            "surface": "recommendations", "at": datetime(2026, 1, 2, tzinfo=UTC),
        },
    }  # fmt: skip


def test_round_trip_every_event_type() -> None:
    codec = AvroCodec()
    content = {
        "content_id": "c1",
        "kind": "episode",
        "title": "Pilot",
        "original_title": "Piloto",
        "year": 2008,
        "runtime_min": 58,
        "genres": ["Drama"],
        "overview": "A teacher...",
        "external_ids": {"imdb": "tt0959621", "tmdb": "62085"},
        "series_id": "s1",
        "season": 1,
        "episode": 1,
        "people": ["Bryan Cranston"],
        "keywords": ["chemistry teacher"],
        "rating": "TV-MA",
    }
    observed = {
        "platform": "netflix",
        "platform_id": "80012345",
        "raw_hash": "ab12",
        "kind": "episode",
        "title": "Pilot",
        "original_title": None,
        "year": 2008,
        "runtime_min": 58,
        "genres": ["Drama"],
        "overview": None,
        "language": "en",
        "imdb_id": "tt0959621",
        "tmdb_id": None,
        "series_platform_id": "70143836",
        "series_title": "Breaking Bad",
        "season": 1,
        "episode": 1,
        "web_url": "https://www.netflix.com/title/80012345",
        "app_url": "nflx://title/80012345",
    }
    resolved = {
        **{k: v for k, v in observed.items() if k not in ("series_platform_id", "series_title")},
        "content_id": "c1",
        "method": "title",
        "score": 97.5,
        "matched_platform": "hulu",
        "matched_platform_id": "h1",
        "series_id": "s1",
    }
    offer = {
        "region": "US",
        "offer_type": "rent",
        "quality": "UHD",
        "price": "3.99",
        "currency": "USD",
        "available_from": datetime(2026, 1, 2, tzinfo=UTC),
        "available_until": None,
    }
    samples = {
        "RankingProfileSet": {
            "profile": "default",
            "version": 1,
            "weights": {"vector": 1.5},
            "description": "",
            "set_by": None,
        },
        "SearchPerformed": {
            "search_id": "s1",
            "query": "Toy Story",
            "normalized_query": "toy story",
            "filters": "{}",
            "result_count": 3,
            "result_ids": ["a", "b", "c"],
            "profile": "default",
            "profile_version": 0,
            "latency_ms": 12.5,
            "degraded": False,
            "user_id": None,
            "at": datetime(2026, 1, 2, tzinfo=UTC),
        },
        "SearchResultClicked": {
            "search_id": "s1",
            "content_id": "a",
            "position": 1,
            "user_id": None,
            "at": datetime(2026, 1, 2, tzinfo=UTC),
        },
        "ContentUpserted": content,
        "PlatformTitleObserved": observed,
        "ContentResolved": resolved,
        "ContentMerged": {"merged_id": "c2", "into_id": "c1", "reason": "imdb tt0959621"},
        "AvailabilityChanged": {
            "platform": "netflix",
            "platform_id": "80012345",
            "offers": [offer],
            "web_url": None,
            "app_url": None,
            "raw_hash": "ab12",
        },
        "AvailabilityEnded": {
            "platform": "netflix",
            "platform_id": "80012345",
            "reason": "dropped from feed",
        },
        "PlaybackStarted": PLAY,
        "PlaybackProgressed": PLAY,
        "PlaybackStopped": PLAY,
        **{t: _identity_sample(codec, t) for t in IDENTITY.event_types},
        **_library_samples(),
        **_session_samples(),
        **_experiment_samples(),
        **_activity_samples(),
        **_notification_samples(),
        **_command_samples(),
        **_ops_samples(),
        **_moderation_samples(),
    }
    assert set(samples) == set(codec.event_types)
    for event_type, payload in samples.items():
        data = codec.encode(event_type, payload)
        assert data[:2] == MARKER
        assert data[2:10] == codec.current(event_type).fingerprint
        assert codec.decode(data) == (event_type, payload)
        # the compiled writers (core/avro_write.py) write fastavro's bytes, on every type
        body = io.BytesIO()
        fastavro.schemaless_writer(body, codec.current(event_type).parsed, payload)
        assert data[10:] == body.getvalue(), event_type


def test_fingerprint_is_crc64_avro_in_wire_order() -> None:
    # Avro specification test vector: "int" -> 0x7275d51a3f395c8f, little-endian on the wire.
    assert fingerprint_of("int") == bytes.fromhex("8f5c393f1ad57572")


def _evolved_root(tmp_path: Path) -> Path:
    root = tmp_path / "avro"
    shutil.copytree(SCHEMA_ROOT, root)
    v1 = json.loads((root / "playback" / "PlaybackProgressed.v1.avsc").read_text())
    v1["fields"].append({"name": "playback_rate", "type": "double", "default": 1.0})
    (root / "playback" / "PlaybackProgressed.v2.avsc").write_text(json.dumps(v1))
    return root


def test_old_writer_read_by_new_reader_with_defaulted_field(tmp_path: Path) -> None:
    old = AvroCodec()
    new = AvroCodec(_evolved_root(tmp_path))
    data = old.encode("PlaybackProgressed", PLAY)
    event_type, payload = new.decode(data)
    assert event_type == "PlaybackProgressed"
    assert payload == {**PLAY, "playback_rate": 1.0}
    # and the new writer's messages name the v2 schema
    data2 = new.encode("PlaybackProgressed", {**PLAY, "playback_rate": 1.5})
    assert data2[2:10] == new.current("PlaybackProgressed").fingerprint != data[2:10]
    assert new.decode(data2)[1]["playback_rate"] == 1.5


def test_unknown_fingerprint_raises_typed_error() -> None:
    codec = AvroCodec()
    data = bytearray(codec.encode("PlaybackStarted", PLAY))
    data[2:10] = b"\x00" * 8
    with pytest.raises(UnknownSchemaError) as info:
        codec.decode(bytes(data))
    assert info.value.fingerprint == b"\x00" * 8


@pytest.mark.parametrize("garbage", [b"", b"\xc3", b"hello world", b"\xc3\x02" + b"\x00" * 20])
def test_garbage_is_malformed(garbage: bytes) -> None:
    with pytest.raises(MalformedEventError):
        AvroCodec().decode(garbage)


def test_truncated_body_is_malformed() -> None:
    codec = AvroCodec()
    data = codec.encode("PlaybackStarted", PLAY)
    with pytest.raises(MalformedEventError):
        codec.decode(data[:-3])
    with pytest.raises(MalformedEventError):
        codec.decode(data + b"\x00")


def test_encode_error_names_the_field() -> None:
    with pytest.raises(EncodeError, match="content_id"):
        AvroCodec().encode("PlaybackStarted", {**PLAY, "content_id": None})
    with pytest.raises(UnknownSchemaError):
        AvroCodec().encode("NoSuchEvent", {})


def _released() -> list[tuple[bytes, str]]:
    out = []
    for line in FINGERPRINTS.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            fp, name = line.split()
            out.append((bytes.fromhex(fp), name))
    return out


def test_every_released_fingerprint_stays_readable() -> None:
    codec = AvroCodec()
    by_fp = {v.fingerprint: v for v in codec.versions}
    released = _released()
    assert released, "schemas/fingerprints.txt lists no schema"
    for fp, name in released:
        assert fp in by_fp, f"released schema {name} ({fp.hex()}) was removed or changed"
        v = by_fp[fp]
        assert f"{v.context}/{v.event_type}.v{v.version}" == name


def test_every_schema_is_registered_as_released() -> None:
    released = {fp for fp, _ in _released()}
    missing = [
        f"{v.fingerprint.hex()} {v.context}/{v.event_type}.v{v.version}"
        for v in AvroCodec().versions
        if v.fingerprint not in released
    ]
    assert not missing, f"append these lines to schemas/fingerprints.txt: {missing}"


def test_decode_many_matches_decode_and_pins_bad_records(tmp_path: Path) -> None:
    old, new = AvroCodec(), AvroCodec(_evolved_root(tmp_path))
    datas = [old.encode("PlaybackProgressed", {**PLAY, "position_s": float(i)}) for i in range(30)]
    datas.insert(5, b"garbage")
    datas.insert(17, datas[16][:-2])  # truncated body among good ones of the same schema
    datas.append(new.encode("PlaybackProgressed", {**PLAY, "playback_rate": 2.0}))
    got = new.decode_many(datas)
    for data, item in zip(datas, got, strict=True):
        if isinstance(item, Exception):
            with pytest.raises(type(item)):
                new.decode(data)
        else:
            assert item == new.decode(data)
    assert isinstance(got[5], MalformedEventError) and isinstance(got[17], MalformedEventError)
    assert sum(isinstance(g, Exception) for g in got) == 2
    assert got[0][1]["playback_rate"] == 1.0 and got[-1][1]["playback_rate"] == 2.0


def test_decode_many_never_shifts_a_payload_onto_another_record() -> None:
    codec = AvroCodec()
    good = codec.encode("PlaybackStarted", PLAY)
    header_only = good[:10]
    datas = [good] * 5 + [good + b"\x02\x00", header_only] + [good] * 5
    got = codec.decode_many(datas)
    assert isinstance(got[5], MalformedEventError) and isinstance(got[6], MalformedEventError)
    assert [g for i, g in enumerate(got) if i not in (5, 6)] == [("PlaybackStarted", PLAY)] * 10


def test_decode_many_names_a_null_value_malformed() -> None:
    got = AvroCodec().decode_many([None, b""])  # type: ignore[list-item]
    assert all(isinstance(g, MalformedEventError) for g in got)
