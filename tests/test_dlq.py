"""The dead-letter workbench (mgw dlq, GET /v1/admin/dead-letters) on the real stack: a poison
record is listed and shown, a retry after the cause is fixed applies once however often
it is run, a skip is an event and hides the letter, a purge hides resolved ones."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
from psycopg import AsyncConnection
from starlette.testclient import TestClient

from core.codec import default_codec
from core.settings import Settings
from core.topics import OPS_DEAD_LETTERS, PLAYBACK
from mgw import dlq
from mgw.cli import main
from mgw.platform import Platform
from projections.base import Envelope, Stores
from projections.dead_letters import LetterFilter
from projections.playback import PlaybackProjector
from streams.embedded import EmbeddedLog
from streams.log import EventLog, OutgoingRecord
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import ProjectorLoop
from tests.conftest import run
from tests.helpers import play
from tests.identity_helpers import new_user

QUIET = dlq.Output(progress=False)
GARBAGE = OutgoingRecord(b"u1", b"\x00garbage\xff", (("event_type", b"?"),))


class BuggyPlayback(PlaybackProjector):
    """The playback projector with a bug that trips over one title: the cause an operator
    fixes (here: by retrying with the real projector) before retrying."""

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> Any:
        if any(e.payload["content_id"] == "c-bug" for e in batch):
            raise ValueError("bug: cannot handle c-bug")
        return await super().apply(conn, batch)


@pytest.fixture
async def elog(db_uri: str) -> AsyncIterator[EmbeddedLog]:
    log = await EmbeddedLog(db_uri).open()
    yield log
    await log.close()


def platform(settings: Settings, log: EventLog, stores: Stores) -> Platform:
    return Platform(settings, log, stores, Publisher(log))


async def _events_for(stores: Stores, user: str, content: str) -> int:
    async with stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(event_count), 0) FROM playback_positions"
            " WHERE user_id = %s AND content_id = %s",
            (user, content),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def _poison_playback(pf: Platform, user: str = "u1") -> None:
    """Three good records around one the buggy projector cannot apply."""
    await pf.publisher.publish_many(
        [play(user, "c1", 600), play(user, "c-bug", 900), play(user, "c2", 1200)]
    )
    loop = ProjectorLoop(ProjectionPipeline(BuggyPlayback(), pf.stores, pf.log), pf.log,
                         linger_ms=0)  # fmt: skip
    await loop.catch_up()


async def test_retry_after_the_fix_applies_once_even_when_retried_twice(
    settings: Settings, elog: EmbeddedLog, stores: Stores
) -> None:
    pf = platform(settings, elog, stores)
    await _poison_playback(pf)
    assert await _events_for(stores, "u1", "c-bug") == 0
    await dlq.catch_up(pf, QUIET)
    [letter] = await dlq.list_letters(pf, LetterFilter(projector="playback"))
    assert (letter["reason"], letter["state"], letter["attempts"]) == ("apply", "pending", 0)
    assert "cannot handle c-bug" in letter["error"]

    # not fixed yet: it fails again and stays a dead letter, one attempt more
    first = await dlq.retry(pf, letter, by="ops", projectors=lambda _: BuggyPlayback())
    assert first["outcome"] == "failed" and "c-bug" in first["error"]
    assert await _events_for(stores, "u1", "c-bug") == 0

    # fixed: applied once, and a second retry (and a third, racing) finds it done
    fixed = PlaybackProjector()
    outcomes = [
        (await dlq.retry(pf, letter, by="ops", projectors=lambda _: fixed))["outcome"]
        for _ in range(3)
    ]
    assert outcomes == ["applied", "already_applied", "already_applied"]
    assert await _events_for(stores, "u1", "c-bug") == 1
    assert await _events_for(stores, "u1", "c1") == 1  # its neighbours untouched

    await dlq.catch_up(pf, QUIET)
    assert await dlq.list_letters(pf, LetterFilter()) == []
    shown = await dlq.find(pf, letter["id"])
    assert shown is not None
    assert (shown["state"], shown["attempts"]) == ("retried", 4)
    assert [d["outcome"] for d in shown["decisions"]] == ["failed", *outcomes]

    # the projector running on afterwards (a redelivered batch) does not apply it again
    await ProjectorLoop(ProjectionPipeline(fixed, stores, elog), elog, linger_ms=0).catch_up()
    assert await _events_for(stores, "u1", "c-bug") == 1


async def test_skip_is_an_event_and_purge_hides_resolved_letters(
    settings: Settings, elog: EmbeddedLog, stores: Stores
) -> None:
    pf = platform(settings, elog, stores)
    await elog.append(PLAYBACK.name, GARBAGE)
    await _poison_playback(pf)
    await dlq.catch_up(pf, QUIET)
    letters = await dlq.list_letters(pf, LetterFilter())
    assert sorted(x["reason"] for x in letters) == ["apply", "decode"]
    [garbage] = [x for x in letters if x["reason"] == "decode"]

    result = await dlq.skip(pf, garbage, by="ops", note="test data")
    assert result["outcome"] == "skipped"
    ops = await elog.read(OPS_DEAD_LETTERS.name, 0, 0, 10)
    assert [default_codec().decode(r.value) for r in ops] == [
        (
            "DeadLetterSkipped",
            {"projector": "playback", "topic": PLAYBACK.name, "partition": garbage["partition"],
             "offset": garbage["offset"], "by": "ops", "note": "test data"},
        )
    ]  # fmt: skip
    await dlq.catch_up(pf, QUIET)
    assert [x["reason"] for x in await dlq.list_letters(pf, LetterFilter())] == ["apply"]
    skipped = await dlq.list_letters(pf, LetterFilter(state="skipped"))
    assert [x["id"] for x in skipped] == [garbage["id"]]
    again = await dlq.skip(pf, skipped[0], by="ops")
    assert again["outcome"] == "already skipped"  # no second event
    assert len(await elog.read(OPS_DEAD_LETTERS.name, 0, 0, 10)) == 1

    await pf.publisher.publish(dlq.dl.purged(topic=None, projector="playback", by="ops"))
    await dlq.catch_up(pf, QUIET)
    everything = await dlq.list_letters(pf, LetterFilter(state="all"))
    assert [x["reason"] for x in everything] == ["apply"]  # the pending one stays in view
    kept = await dlq.list_letters(pf, LetterFilter(state="all", include_purged=True))
    assert len(kept) == 2


def _wait_listed(client: TestClient, headers: dict[str, str], **params: str) -> list[Any]:
    """The app's own dead_letters projector folds the .dlq topic in the background."""
    for _ in range(200):
        items = client.get("/v1/admin/dead-letters", headers=headers, params=params).json()["items"]
        if items:
            return list(items)
        time.sleep(0.05)
    raise AssertionError("the dead letter never showed up in GET /v1/admin/dead-letters")


def test_poison_record_in_the_cli_and_the_admin_api(
    client: TestClient,
    admin: dict[str, str],
    app_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def poison() -> None:
        assert app_settings.database_url
        log = await EmbeddedLog(app_settings.database_url).open()
        try:
            await log.append(PLAYBACK.name, GARBAGE)
        finally:
            await log.close()

    run(poison())
    [item] = _wait_listed(client, admin, topic=PLAYBACK.name, projector="playback")
    assert (item["reason"], item["state"], item["attempts"]) == ("decode", "pending", 0)
    assert item["dlq_topic"] == f"{PLAYBACK.name}.dlq"
    assert client.get(
        "/v1/admin/dead-letters", headers=admin, params={"reason": "apply"}
    ).json() == {
        "items": [],
        "next_cursor": None,
    }
    # a NUL byte cannot be in a PostgreSQL text value: a clear 422, not a failed query
    for name in ("topic", "projector", "error"):
        bad = client.get("/v1/admin/dead-letters", headers=admin, params={name: "ab\x00c"})
        assert bad.status_code == 422 and bad.json()["field"] == name, bad.text
    one = client.get(f"/v1/admin/dead-letters/{item['id']}", headers=admin).json()
    assert one["key"] == "u1" and one["payload"] is None and one["decode_error"]
    assert one["value_hex"] == GARBAGE.value.hex() and one["headers"] == {"event_type": "?"}

    _, user = new_user(client)
    assert client.get("/v1/admin/dead-letters", headers=user).status_code == 403
    assert client.get(f"/v1/admin/dead-letters/{item['id']}", headers=user).status_code == 403
    assert client.post(f"/v1/admin/dead-letters/{item['id']}/skip", headers=user).status_code == 403

    # the CLI against the same database, beside the running app
    monkeypatch.setenv("DATABASE_URL", app_settings.database_url or "")
    monkeypatch.setenv("REDIS_URL", app_settings.redis_url or "")
    monkeypatch.setenv("MGW_DATA_DIR", str(app_settings.data_dir))
    # every projector reading the topic failed it: one dead letter each
    assert main(["dlq", "list", "--json", "--no-progress", "--projector", "playback"]) == 0
    listed = json.loads(capsys.readouterr().out)["items"]
    assert [x["id"] for x in listed] == [item["id"]]
    assert main(["dlq", "show", item["id"], "--no-progress"]) == 0
    shown = capsys.readouterr().out
    assert f"dead letter {item['id']}" in shown and "does not decode" in shown
    # a record that cannot decode fails again: still pending, one attempt more
    assert main(["dlq", "retry", item["id"], "--json", "--no-progress"]) == 1
    assert json.loads(capsys.readouterr().out)["results"][0]["outcome"] == "failed"
    after = client.get(f"/v1/admin/dead-letters/{item['id']}", headers=admin).json()
    assert (after["state"], after["attempts"]) == ("pending", 1)

    r = client.post(
        f"/v1/admin/dead-letters/{item['id']}/skip", headers=admin, json={"note": "junk"}
    )
    assert r.status_code == 202, r.text
    assert client.post(f"/v1/admin/dead-letters/{item['id']}/skip", headers=admin).status_code in (
        202,
        409,
    )  # the second may land before the first is folded; either way it is not pending
    assert main(["dlq", "list", "--state", "skipped", "--json", "--no-progress"]) == 0
    skipped = json.loads(capsys.readouterr().out)["items"]
    assert [x["id"] for x in skipped] == [item["id"]]


@pytest.mark.kafka
async def test_list_and_retry_on_kafka(settings: Settings, stores: Stores, kafka: str) -> None:
    from core.topics import ALL_TOPICS
    from streams.kafka import KafkaLog

    klog = KafkaLog(kafka)
    await klog.open()
    try:
        await klog.ensure_topics(ALL_TOPICS)
        pf = platform(settings, klog, stores)
        user = f"u-{uuid.uuid4().hex[:8]}"
        await _poison_playback(pf, user)
        await dlq.catch_up(pf, QUIET)
        mine = [
            x for x in await dlq.list_letters(pf, LetterFilter(projector="playback"))
            if (await dlq.find(pf, x["id"]) or {}).get("key") == user.encode()
        ]  # fmt: skip
        assert [(x["reason"], x["dlq_topic"]) for x in mine] == [("apply", f"{PLAYBACK.name}.dlq")]
        fixed = PlaybackProjector()
        outcomes = [
            (await dlq.retry(pf, mine[0], by="ops", projectors=lambda _: fixed))["outcome"]
            for _ in range(2)
        ]
        assert outcomes == ["applied", "already_applied"]
        assert await _events_for(stores, user, "c-bug") == 1
        await dlq.catch_up(pf, QUIET)
        shown = await dlq.find(pf, mine[0]["id"])
        assert shown is not None and (shown["state"], shown["attempts"]) == ("retried", 2)
    finally:
        await klog.close()
