"""Batch helpers of the catalog projectors give what the per-record code gave."""

from __future__ import annotations

from core.events import LazyHeaders, pack_headers
from projections.base import Envelope
from projections.happened import happened_at_all


def _env(headers: object, ts: int = 1_700_000_000_123) -> Envelope:
    return Envelope("t", 0, 0, "k", "X", {}, headers, ts)  # type: ignore[arg-type]


def test_happened_at_all_equals_each_envelopes_happened_at() -> None:
    batch = [
        _env(LazyHeaders(pack_headers([("occurred_at", b"1700000000456")]))),
        _env(LazyHeaders(pack_headers([("occurred_at", b"1700000000456")]))),
        _env((("occurred_at", b"1600000000001"), ("producer", b"x"))),
        _env((("producer", b"x"),), ts=1_650_000_000_999),  # no header: the log's time
        _env((("occurred_at", b"soon"),), ts=1_650_000_000_000),  # unreadable: likewise
    ]
    got = happened_at_all(batch)
    assert got == [e.happened_at for e in batch]
    assert got[0] != got[2] and got[3] != got[4]


def test_merge_of_one_source_is_the_general_merge_of_it() -> None:
    import random
    from datetime import UTC, datetime, timedelta

    from domain.catalog.canonical import SOURCE_PRECEDENCE, SourceRecord, _merge_many, _single

    rng = random.Random(7)
    seen_repeated_genre = False
    for _ in range(3000):
        genres = tuple(rng.choice(["Drama", "Comedy", "Action"]) for _ in range(rng.randint(0, 4)))
        seen_repeated_genre |= len(set(genres)) < len(genres)
        r = SourceRecord(
            platform=rng.choice(SOURCE_PRECEDENCE), platform_id=str(rng.randint(0, 9)),
            kind=rng.choice(["movie", "series", "episode"]),
            title=rng.choice(["The Heat", "Star Wars: A New Hope", "Heat"]),
            original_title=rng.choice([None, "", "Hitze"]), year=rng.choice([None, 1995]),
            runtime_min=rng.choice([None, 0, 104]), genres=genres,
            overview=rng.choice([None, "", "A heist."]), language=rng.choice([None, "en"]),
            imdb_id=rng.choice([None, "tt1"]), tmdb_id=rng.choice([None, "1"]),
            series_id=rng.choice([None, "s"]), season=rng.choice([None, 1]),
            episode=rng.choice([None, 2]),
            first_seen=datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 9)),
            updated_at=datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 9)),
        )  # fmt: skip
        assert _single(r) == _merge_many([r]), r
    assert seen_repeated_genre
