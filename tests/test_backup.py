"""Backup and restore of the log, proven by replay: real events through the API and the
demo builders, a backup, a restore into an empty database, every projector replayed, and
the same checksum for every projection; then an incremental on top, restored as a chain;
a tampered file refused; a backup taken while a writer appends is an exact prefix."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest
from starlette.testclient import TestClient

from core.settings import Settings
from mgw.backup import backup, restore
from mgw.backup_manifest import MANIFEST, BackupError, Manifest
from tests.conftest import ROOT, TEST_IDENTITY, Services
from tests.identity_helpers import new_user
from tests.test_search import SECRET
from tests.test_search import _deliver as deliver
from tests.test_search import _nf as netflix_title

TITLES = [(401 + i, f"Backup Title {i}", 1980 + i, f"tt94{i:05d}") for i in range(20)]
#: Redis database numbers of this module (source, restore targets): other modules use
#: theirs, and each is flushed before use
SOURCE_REDIS, TARGET_REDIS = 9, (10, 12, 13)


@dataclass
class Source:
    settings: Settings
    services: Services
    root: Path


def _new_database(services: Services, prefix: str) -> str:
    """An empty database, not even migrated: a restore must bring everything itself."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return services.db_uri(name)


def _redis(services: Services, n: int) -> str:
    import redis

    r = redis.Redis(unix_socket_path=services.redis_socket, db=n)
    r.flushdb()
    r.close()
    return f"unix://{services.redis_socket}?db={n}"


def _sql(uri: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(uri, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def _lagging(c: TestClient) -> dict[str, int]:
    """Records each projector has yet to fold (topic-partitions with records only)."""
    from projections.registry import PROJECTORS
    from streams.processing import load_watermarks

    mgw = c.app.state.mgw  # type: ignore[attr-defined]

    async def lag() -> dict[str, int]:
        out: dict[str, int] = {}
        for p in PROJECTORS:
            marks = await load_watermarks(mgw.stores, p.name)
            behind = 0
            for topic in p.topics:
                for part, end in (await mgw.log.end_offsets(topic)).items():
                    behind += max(0, end - marks.get((topic, part), 0))
            if behind:
                out[p.name] = behind
        return out

    result: dict[str, int] = c.portal.call(lag)  # type: ignore[union-attr]
    return result


def _wait_caught_up(c: TestClient) -> None:
    deadline = time.monotonic() + 90
    while lag := _lagging(c):
        assert time.monotonic() < deadline, lag
        time.sleep(0.2)


def _produce(c: TestClient, round_: int) -> None:
    """Events of every kind an app sends: feeds, accounts, playback, library, activity,
    plus the demo's playback and library histories."""
    from mgw.demo import library_events, playback_events

    base = TITLES[round_ * 10 : round_ * 10 + 10]
    deliver(c, "netflix", {"titles": [netflix_title(*t) for t in base]})
    deadline = time.monotonic() + 60
    uri = c.app.state.settings.database_url  # type: ignore[attr-defined]
    want = 10 * (round_ + 1)
    while len(_sql(uri, "SELECT 1 FROM content WHERE title LIKE %s", "Backup Title%")) < want:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ids = [r[0] for r in _sql(uri, "SELECT content_id FROM content ORDER BY title")]
    for n in range(2):
        _, h = new_user(c, f"viewer{round_}{n}")
        for i, cid in enumerate(ids[:3]):
            for kind, pos in (("start", 0.0), ("progress", 600.0 + i), ("stop", 1200.0)):
                r = c.post(
                    "/v1/playback/events",
                    json={"content_id": cid, "device_id": "tv", "kind": kind,
                          "position_s": pos, "duration_s": 6000.0},
                    headers=h,
                )  # fmt: skip
                assert r.status_code in (200, 202), r.text
        assert c.post("/v1/me/watchlist", json={"content_id": ids[0]}, headers=h).status_code < 300
        r = c.put(f"/v1/me/ratings/{ids[1]}", json={"rating": 7 + n}, headers=h)
        assert r.status_code < 300, r.text
        r = c.post(
            "/v1/activity",
            json={"events": [{"event_id": f"a-{round_}-{n}", "kind": "click",
                              "content_id": ids[2], "surface": "home", "position": 1,
                              "device_id": "tv"}]},
            headers=h,
        )  # fmt: skip
        assert r.status_code == 202, r.text
    mgw = c.app.state.mgw  # type: ignore[attr-defined]
    demo = playback_events(ids, seed=round_) + library_events(ids, seed=round_ + 11)
    c.portal.call(mgw.publisher.publish_many, demo)  # type: ignore[union-attr]
    _wait_caught_up(c)


def _run_app(settings: Settings, round_: int) -> None:
    from mgw.app import create_app

    with TestClient(create_app(settings)) as c:
        c.app.state.settings = settings  # type: ignore[attr-defined]
        _produce(c, round_)
    # Nothing may have been appended between the wait and the stop, or the source's
    # projections would be behind its own log and no restore could match them.
    assert _source_lag(settings) == {}, "the app appended after it caught up"


def _source_lag(settings: Settings) -> dict[str, int]:
    uri = settings.database_url or ""
    ends = dict(_sql(uri, "SELECT topic || ':' || partition, next_offset FROM log_heads"))
    from projections.registry import PROJECTORS

    out: dict[str, int] = {}
    for p in PROJECTORS:
        marks = dict(
            _sql(
                uri,
                "SELECT topic || ':' || partition, next_offset FROM projection_watermarks"
                " WHERE projector = %s",
                p.name,
            )
        )
        behind = sum(
            max(0, e - marks.get(tp, 0)) for tp, e in ends.items() if tp.split(":")[0] in p.topics
        )
        if behind:
            out[p.name] = behind
    return out


def checksums(settings: Settings) -> dict[str, str]:
    from mgw.platform import open_platform
    from projections import maintenance
    from projections.registry import PROJECTORS

    async def run() -> dict[str, str]:
        async with open_platform(settings, with_vectors=False) as pf:
            return {p.name: await maintenance.checksum(pf.stores, p) for p in PROJECTORS}

    return asyncio.run(run())


#: Compared by maintenance.checksum: every projection but these. interactions stamps each
#: rec_interactions row with the time it was projected (updated_at, the retrain trigger),
#: so a replay can never match it; it is compared below without that column. Playback's
#: Redis keys are in its checksum and rebuilt by the replay; search vectors are in no
#: checksum (the background indexer, off here, embeds documents after the fact).
EXCLUDED = frozenset({"interactions"})
#: projection-time columns: when a row was folded, not what the log says
PROJECTION_TIME = {"rec_interactions": ("updated_at",)}


def _projection_time_free(settings: Settings) -> dict[str, Any]:
    """The excluded projections' tables, minus their projection-time columns."""
    from projections.registry import by_name

    uri, out = settings.database_url or "", {}
    for name in EXCLUDED:
        for table in by_name(name).tables:
            cols = [
                c
                for (c,) in _sql(
                    uri,
                    "SELECT column_name FROM information_schema.columns WHERE table_name = %s"
                    " AND table_schema = 'public' ORDER BY ordinal_position",
                    table,
                )
                if c not in PROJECTION_TIME.get(table, ())
            ]
            out[table] = _sql(uri, f"SELECT {', '.join(cols)} FROM {table} ORDER BY 1, 2")
    return out


def _compare(source: Settings, original: dict[str, str], target: Settings) -> None:
    rebuilt = checksums(target)
    assert set(rebuilt) == set(original)
    differ = {n: (original[n], rebuilt[n]) for n in original if n not in EXCLUDED}
    assert {n: v for n, v in differ.items() if v[0] != v[1]} == {}
    src, dst = _projection_time_free(source), _projection_time_free(target)
    assert all(src.values()) and src == dst


def _log_rows(uri: str, ends: dict[tuple[str, int], int]) -> list[tuple[Any, ...]]:
    rows = _sql(
        uri,
        'SELECT topic, partition, "offset", key, value, headers, appended_at FROM log_records'
        ' ORDER BY topic, partition, "offset"',
    )
    return [r for r in rows if r[2] < ends.get((r[0], r[1]), 0)]


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory, services: Services) -> Source:
    root = tmp_path_factory.mktemp("backup")
    settings = Settings(
        data_dir=root / "source",
        database_url=_new_database(services, "backup_src"),
        redis_url=_redis(services, SOURCE_REDIS),
        batch_linger_ms=0,
        webhook_secrets=(("netflix", SECRET),),
        identity=TEST_IDENTITY,
        search_indexer=False,
        embeddings="none",
    )
    _run_app(settings, 0)
    return Source(settings, services, root)


def _target(src: Source, name: str, redis_db: int) -> Settings:
    return replace(
        src.settings,
        data_dir=src.root / name,
        database_url=_new_database(src.services, f"backup_{name}"),
        redis_url=_redis(src.services, redis_db),
    )


def test_a_restored_log_rebuilds_every_projection_identically(source: Source) -> None:
    full = source.root / "full"
    summary, manifest = asyncio.run(backup(source.settings, full, progress=False))
    assert summary.records == sum(manifest.end_offsets.values()) > 100
    original = checksums(source.settings)

    target = _target(source, "restored", TARGET_REDIS[0])
    report = asyncio.run(restore(target, full, progress=False))
    assert report["records"] == summary.records
    fed = ("catalog", "resolution", "availability", "search", "playback", "library",
           "interactions", "identity")  # fmt: skip
    assert all(report["projectors"][n] > 0 for n in fed), report["projectors"]

    # The log itself: every record at its offset, with its key, headers and timestamp.
    src_uri, dst_uri = source.settings.database_url or "", target.database_url or ""
    restored_rows = _log_rows(dst_uri, manifest.end_offsets)
    assert restored_rows == _log_rows(src_uri, manifest.end_offsets)
    assert len(restored_rows) == summary.records
    heads = dict(_sql(dst_uri, "SELECT topic || ':' || partition, next_offset FROM log_heads"))
    assert all(heads.get(f"{t}:{p}", 0) == e for (t, p), e in manifest.end_offsets.items())

    _compare(source.settings, original, target)

    # a second restore into the now populated log is refused, naming the reason
    with pytest.raises(BackupError, match="not empty"):
        asyncio.run(restore(target, full, rebuild=False, progress=False))


def test_an_incremental_chain_restores_to_the_same_projections(source: Source) -> None:
    full = source.root / "full"
    if not (full / MANIFEST).exists():  # run alone
        asyncio.run(backup(source.settings, full, progress=False))
    _run_app(source.settings, 1)  # more of every kind of event, on the same source
    incr = source.root / "incr"
    summary, manifest = asyncio.run(
        backup(source.settings, incr, since_manifest=full / MANIFEST, progress=False)
    )
    parent = Manifest.from_json((full / MANIFEST).read_text(), "full")
    assert manifest.parent and manifest.parent["backup_id"] == parent.backup_id
    assert manifest.start_offsets == {
        tp: parent.end_offsets.get(tp, 0) for tp in manifest.end_offsets
    }
    assert summary.records == sum(manifest.end_offsets.values()) - sum(parent.end_offsets.values())
    assert summary.records > 50
    original = checksums(source.settings)

    target = _target(source, "chain", TARGET_REDIS[1])
    report = asyncio.run(restore(target, incr, progress=False))
    assert report["backups"] == 2
    assert report["records"] == sum(manifest.end_offsets.values())
    _compare(source.settings, original, target)


def test_a_tampered_file_is_refused_by_name(source: Source, tmp_path: Path) -> None:
    """Through the CLI, as an operator runs it: exit 1, the file named, nothing loaded."""
    import shutil

    bak = tmp_path / "bak"
    env = {
        **os.environ,
        "DATABASE_URL": source.settings.database_url or "",
        "REDIS_URL": source.settings.redis_url or "",
        "KAFKA_BOOTSTRAP_SERVERS": "",
    }
    done = subprocess.run(
        [sys.executable, "-m", "mgw.cli", "backup", "--out", str(bak), "--json", "--no-progress"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["records"] > 0 and summary["records_per_s"] > 0

    copy = tmp_path / "tampered"
    shutil.copytree(bak, copy)
    manifest = Manifest.from_json((copy / MANIFEST).read_text(), "copy")
    victim = max(manifest.files, key=lambda f: f.bytes)
    data = bytearray((copy / victim.file).read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    (copy / victim.file).write_bytes(bytes(data))

    target = _target(source, f"tampered{uuid.uuid4().hex[:4]}", TARGET_REDIS[2])
    env.update(DATABASE_URL=target.database_url or "", REDIS_URL=target.redis_url or "")
    done = subprocess.run(
        [sys.executable, "-m", "mgw.cli", "restore", "--from", str(copy), "--data-dir",
         str(target.data_dir), "--no-progress"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    assert victim.file in done.stderr and "sha256" in done.stderr, done.stderr
    # refused before a single record went in (the database was never even migrated)
    tables = _sql(target.database_url or "", "SELECT to_regclass('log_records')::text")
    assert tables == [(None,)]


def test_a_backup_taken_while_a_writer_appends_is_an_exact_prefix(
    settings: Settings, services: Services, tmp_path: Path
) -> None:
    """The end offsets are decided first: records appended during the copy are not in it,
    and every partition up to them is, without a gap."""
    from core.events import Event
    from streams.embedded import EmbeddedLog
    from streams.publisher import Publisher
    from tests.helpers import play

    async def scenario() -> tuple[Manifest, dict[tuple[str, int], int]]:
        log = await EmbeddedLog(settings.database_url or "").open()
        pub = Publisher(log)
        await pub.publish_many([play(f"u{i % 17}", f"c{i % 9}", float(i)) for i in range(3000)])
        stop = asyncio.Event()

        async def writer() -> None:
            i = 0
            while not stop.is_set():
                batch: list[Event] = [play(f"w{i % 5}", "c1", float(i + j)) for j in range(50)]
                await pub.publish_many(batch)
                i += 50
                await asyncio.sleep(0)

        task = asyncio.create_task(writer())
        try:
            _, manifest = await backup(
                settings, tmp_path / "live", segment_records=400, progress=False
            )
        finally:
            stop.set()
            await task
        after = {}
        for t in {t for t, _ in manifest.end_offsets}:
            after.update({(t, p): o for p, o in (await log.end_offsets(t)).items()})
        await log.close()
        return manifest, after

    manifest, after = asyncio.run(scenario())
    assert sum(after.values()) > sum(manifest.end_offsets.values())  # the writer got in
    # segments of at most 400 records, contiguous, covering exactly [0, end)
    by_tp: dict[tuple[str, int], list[Any]] = {}
    for f in manifest.files:
        assert f.records <= 400
        by_tp.setdefault((f.topic, f.partition), []).append(f)
    for tp, end in manifest.end_offsets.items():
        files = sorted(by_tp.get(tp, []), key=lambda f: f.first_offset)
        covered = [(f.first_offset, f.end_offset) for f in files]
        expect_at = 0
        for first, last in covered:
            assert first == expect_at
            expect_at = last
        assert expect_at == end, (tp, covered, end)

    target = replace(
        settings,
        data_dir=tmp_path / "t",
        database_url=_new_database(services, "backup_live"),
        redis_url=_redis(services, TARGET_REDIS[2]),
    )
    asyncio.run(restore(target, tmp_path / "live", rebuild=False, progress=False))
    src = _log_rows(settings.database_url or "", manifest.end_offsets)
    assert _log_rows(target.database_url or "", manifest.end_offsets) == src
    assert len(src) == sum(manifest.end_offsets.values())
