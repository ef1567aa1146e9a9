"""Bad input at volume (issue 21, item 5): poison on every topic while the mixed load
runs against `mgw up` goes to the dead letters, all of it, and the line keeps moving
(ops/chaos/poison.py).

Also the two ways one record in a dead-letter topic stopped the dead letters read model
for good (its reader has no dead-letter topic to send a record it cannot store to): a
dead letter whose error text holds a NUL, which a projector's own rejection writes when
it quotes the payload, and dead-letter headers whose numbers do not fit the columns.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.events import Event, headers_dict
from core.topics import ALL_TOPICS, NOTIFICATIONS
from ops.chaos import poison
from projections.base import Stores
from projections.dead_letters import DeadLettersProjector, LetterFilter, list_letters
from projections.notifications import NotificationsProjector
from streams.embedded import EmbeddedLog
from streams.log import OutgoingRecord
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import ProjectorLoop


@pytest.fixture
async def elog(db_uri: str) -> AsyncIterator[EmbeddedLog]:
    log = await EmbeddedLog(db_uri).open()
    yield log
    await log.close()


async def _catch_up_dead_letters(elog: EmbeddedLog, stores: Stores) -> list[dict[str, object]]:
    loop = ProjectorLoop(
        ProjectionPipeline(DeadLettersProjector(), stores, elog), elog, linger_ms=0
    )
    await loop.catch_up()
    assert set((await loop.lag()).values()) == {0}
    async with stores.pg.connection() as conn:
        return await list_letters(conn, LetterFilter(state="all"), 100)


async def test_a_rejection_that_quotes_a_nul_does_not_stop_the_dead_letters(
    elog: EmbeddedLog, stores: Stores
) -> None:
    # valid Avro that the API would refuse (it checks kinds), as another producer could
    # append it: notifications rejects it naming the kind, NUL included
    event = Event("NotificationPreferencesSet", "u1", {"user_id": "u1",
                  "kinds": {"chaos\x00kind": True}, "digest": None})  # fmt: skip
    await Publisher(elog).publish(event)
    await ProjectorLoop(
        ProjectionPipeline(NotificationsProjector(), stores, elog), elog, linger_ms=0
    ).catch_up()
    [copy] = await poison.read_all(elog, NOTIFICATIONS.dead_letter.name)
    assert "\x00" in headers_dict(copy.headers)["dlq_error"]

    [letter] = await _catch_up_dead_letters(elog, stores)
    assert (letter["projector"], letter["topic"], letter["reason"]) == (
        "notifications", NOTIFICATIONS.name, "rejected",
    )  # fmt: skip
    assert "chaos" in str(letter["error"]) and "\x00" not in str(letter["error"])


async def test_dead_letter_headers_that_do_not_fit_are_listed_not_fatal(
    elog: EmbeddedLog, stores: Stores
) -> None:
    topic = "playback.events.dlq"
    forged = [
        (("dlq_projector", b"play\x00back"), ("dlq_topic", b"playback.events"),
         ("dlq_partition", b"0"), ("dlq_offset", b"7")),
        (("dlq_projector", b"playback"), ("dlq_partition", b"99999999999"),
         ("dlq_offset", b"99999999999999999999999")),
        (("dlq_projector", b"playback"), ("dlq_partition", "\u00b2".encode()),
         ("dlq_offset", "-\u00b2".encode())),
    ]  # fmt: skip
    for headers in forged:
        await elog.append(topic, OutgoingRecord(b"k", b"\x00not avro", headers))
    rows = await _catch_up_dead_letters(elog, stores)
    # numbers that do not parse or fit read as -1, so the last two share one id and the
    # earliest copy's row stands for both
    got = {(r["projector"], r["partition"], r["offset"], r["dlq_offset"]) for r in rows}
    assert got == {("play\ufffdback", 0, 7, 0), ("playback", -1, -1, 1)}


# -- the scenario, short -------------------------------------------------------------


def test_poison_on_every_topic_under_load_is_dead_lettered_and_lag_returns_to_zero(
    tmp_path: Path,
) -> None:
    p = argparse.ArgumentParser()
    poison.add_arguments(p)
    # a higher rate than the 1 % of the full run, so a short load still sends every
    # kind of poison (two rounds over every topic at least)
    args = p.parse_args(
        ["--seconds", "20", "--users", "6", "--titles", "40", "--rate", "0.05",
         "--min-per-topic", "2", "--lag-timeout", "240", "--data-dir", str(tmp_path / "stack")]
    )  # fmt: skip
    result = asyncio.run(poison.run(args))

    assert all(result["injected"][t.name] >= 2 for t in ALL_TOPICS), result["injected"]
    kinds = set(result["injected_by_kind"])
    assert kinds >= {*poison.DECODE_KINDS, *poison.DOMAIN_KINDS, *poison.DLQ_KINDS}, kinds
    assert result["missing"] == [] and result["missing_count"] == 0, result
    assert result["poison_dead_lettered"] == result["injected_total"], result
    assert result["wrongly_dead_lettered"] == [], result
    assert result["unexpected_letters"] == [] and result["wrong_reason"] == [], result
    assert result["mgw_dlq_list_agrees"] is True, result["mgw_dlq_list_agrees"]
    assert result["lag_to_zero_s"] is not None, result["lag_at_end"]
    assert result["stopped_projectors"] == {}, result["stopped_projectors"]
    assert result["errors"] == 0, result
    assert result["acked_writes"] > 0
    assert result["pass"], result
