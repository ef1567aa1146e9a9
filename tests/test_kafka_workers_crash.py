"""Kafka workers (Faust and confluent-kafka runtimes) killed mid-stream (SIGKILL) and
stopped mid-stream (SIGTERM) lose and duplicate nothing: every event is folded once."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from core.settings import Settings
from core.topics import PLAYBACK
from mgw.worker import worker_argv
from streams.faust_app import app_id
from streams.kafka import KafkaLog
from streams.publisher import Publisher
from tests.helpers import play

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parent.parent


def _committed(bootstrap: str) -> dict[int, int]:
    from confluent_kafka import ConsumerGroupTopicPartitions

    admin = AdminClient({"bootstrap.servers": bootstrap})
    req = ConsumerGroupTopicPartitions(
        app_id("playback"), [TopicPartition(PLAYBACK.name, p) for p in range(PLAYBACK.partitions)]
    )
    try:
        res = admin.list_consumer_group_offsets([req])[app_id("playback")].result(timeout=10)
    except Exception:
        return {}
    return {tp.partition: tp.offset for tp in res.topic_partitions if tp.offset >= 0}


def _applied(db_uri: str) -> int:
    with psycopg.connect(db_uri) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(event_count), 0) FROM playback_positions"
        ).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.parametrize("runtime", ["faust", "confluent"])
async def test_worker_crash_and_stop_mid_stream(
    runtime: str, settings: Settings, kafka: str, tmp_path: Path
) -> None:
    s = replace(settings, kafka_bootstrap_servers=kafka)
    log = await KafkaLog(kafka).open()
    from core.topics import ALL_TOPICS

    await log.ensure_topics(ALL_TOPICS)
    start = _committed(kafka)
    rng = random.Random(5)
    events = [
        play(
            f"u{rng.randrange(200)}", f"c{rng.randrange(30)}", float(rng.randrange(6000)), seconds=i
        )
        for i in range(30000)
    ]
    pub = Publisher(log)
    for i in range(0, len(events), 10000):
        await pub.publish_many(events[i : i + 10000])
    ends = await log.end_offsets(PLAYBACK.name)
    await log.close()
    expected = sum(e - start.get(p, 0) for p, e in ends.items())
    assert expected >= len(events)

    env = {
        **os.environ,
        "DATABASE_URL": s.database_url or "",
        "REDIS_URL": s.redis_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": kafka,
        "MGW_DATA_DIR": str(s.data_dir),
        "MGW_BATCH_SIZE": "500",
        "MGW_LOG_LEVEL": "WARNING",
    }
    out = tmp_path / "worker.log"

    def spawn() -> subprocess.Popen[bytes]:
        with open(out, "ab") as fh:
            return subprocess.Popen(
                worker_argv("playback", runtime),
                cwd=ROOT,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )

    def wait_until(proc: subprocess.Popen[bytes], at_least: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while _applied(s.database_url or "") < at_least:
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.05)

    proc = spawn()
    wait_until(proc, expected // 4)
    os.kill(proc.pid, signal.SIGKILL)  # crash: no chance to commit or clean up
    proc.wait(10)

    proc = spawn()
    wait_until(proc, expected // 2)
    proc.send_signal(signal.SIGTERM)  # graceful stop while batches are in flight
    assert proc.wait(60) == 0, out.read_text()[-3000:]
    assert _applied(s.database_url or "") < expected  # it really stopped mid-stream

    proc = spawn()
    wait_until(proc, expected)
    await asyncio.sleep(1.5)  # anything applied twice would show up now
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    assert _applied(s.database_url or "") == expected
