"""`mgw migrate status|plan|up` and `mgw checksum` through the CLI, on real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import psycopg
import pytest

from core.db import MIGRATIONS_DIR
from core.settings import Settings
from mgw.cli import main
from mgw.migrations import statements
from projections import maintenance
from projections.base import Stores
from projections.registry import by_name
from streams.embedded import EmbeddedLog
from streams.processing import ProjectionPipeline
from streams.publisher import Publisher
from streams.runner import ProjectorLoop
from tests.helpers import play

SHIPPED = sorted(p.name for p in MIGRATIONS_DIR.glob("*.sql"))
KEYWORDS = {"CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE", "DO", "COMMENT", "TRUNCATE"}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main([*args, "--json"])
    return code, json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.fixture
def empty_db(services, monkeypatch: pytest.MonkeyPatch) -> str:  # type: ignore[no-untyped-def]
    name = f"mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(services.pg_admin_uri, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    uri: str = services.db_uri(name)
    monkeypatch.setenv("DATABASE_URL", uri)
    return uri


def test_a_fresh_database_is_all_pending_then_all_applied_with_checksums(
    empty_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, got = _cli(capsys, "migrate", "status")
    assert code == 0
    assert [m["name"] for m in got["migrations"]] == SHIPPED
    assert {m["state"] for m in got["migrations"]} == {"pending"}
    code, plan = _cli(capsys, "migrate", "plan")
    assert code == 0 and [m["name"] for m in plan["pending"]] == SHIPPED
    assert "CREATE TABLE" in plan["pending"][0]["sql"]
    # every table is created by the plan itself: nothing holds rows to rebuild
    assert plan["rebuild"] == []
    with psycopg.connect(empty_db) as conn:  # plan ran nothing
        assert conn.execute("SELECT to_regclass('public.log_records')").fetchone() == (None,)
    code, up = _cli(capsys, "migrate", "up")
    assert code == 0 and up["applied"] == SHIPPED and up["rebuild"] == []
    code, got = _cli(capsys, "migrate", "status")
    assert {m["state"] for m in got["migrations"]} == {"applied"}
    with psycopg.connect(empty_db) as conn:
        sums = dict(conn.execute("SELECT name, checksum FROM schema_migrations").fetchall())
    assert sums == {m["name"]: m["checksum"] for m in got["migrations"]}
    assert all(len(s) == 64 for s in sums.values())
    code, again = _cli(capsys, "migrate")  # plain `mgw migrate` is `up`
    assert code == 0 and again["applied"] == []


def test_a_new_migration_names_the_rebuild_and_an_edited_one_is_refused(
    empty_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, d)
    assert main(["migrate", "--migrations-dir", str(d), "--json"]) == 0
    capsys.readouterr()
    (d / "900_note.sql").write_text(
        "-- a column the playback projector will fill\n"
        "ALTER TABLE playback_positions ADD COLUMN IF NOT EXISTS note text;\n"
    )
    code, plan = _cli(capsys, "migrate", "plan", "--migrations-dir", str(d))
    assert code == 0
    assert [m["name"] for m in plan["pending"]] == ["900_note.sql"]
    assert plan["pending"][0]["tables"] == ["playback_positions"]
    assert plan["pending"][0]["statements"] == [
        "ALTER TABLE playback_positions ADD COLUMN IF NOT EXISTS note text"
    ]
    assert plan["rebuild"] == ["playback"]
    main(["migrate", "plan", "--migrations-dir", str(d)])  # as an operator reads it
    text = capsys.readouterr().out
    assert "ALTER TABLE playback_positions" in text and "mgw rebuild playback" in text
    assert "-- 1 statement(s):" in text
    code, up = _cli(capsys, "migrate", "up", "--migrations-dir", str(d))
    assert code == 0 and up == {"applied": ["900_note.sql"], "rebuild": ["playback"]}

    # an applied file edited afterwards: flagged by status, refused by up, by name
    edited = d / SHIPPED[3]
    edited.write_text(edited.read_text() + "\n-- tidied\n")
    code, got = _cli(capsys, "migrate", "status", "--migrations-dir", str(d))
    assert code == 1
    assert [m["name"] for m in got["migrations"] if m["state"] == "edited"] == [SHIPPED[3]]
    (d / "901_more.sql").write_text("CREATE TABLE IF NOT EXISTS mig_probe (x int);\n")
    code, refused = _cli(capsys, "migrate", "up", "--migrations-dir", str(d))
    assert code == 1 and refused["edited"] == [SHIPPED[3]]
    assert "new migration" in refused["error"]
    with psycopg.connect(empty_db) as conn:  # nothing ran
        assert conn.execute("SELECT to_regclass('public.mig_probe')").fetchone() == (None,)
    code, up = _cli(capsys, "migrate", "up", "--allow-edited", "--migrations-dir", str(d))
    assert code == 0 and up["applied"] == ["901_more.sql"]
    code, got = _cli(capsys, "migrate", "status", "--migrations-dir", str(d))
    assert code == 0 and {m["state"] for m in got["migrations"]} == {"applied"}


def test_a_migration_can_declare_the_rebuild_it_needs(
    empty_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, d)
    assert main(["migrate", "--migrations-dir", str(d), "--json"]) == 0
    capsys.readouterr()
    (d / "900_fix.sql").write_text("-- rebuild: library\nSELECT 1;\n")
    code, plan = _cli(capsys, "migrate", "plan", "--no-sql", "--migrations-dir", str(d))
    assert code == 0 and plan["rebuild"] == ["library"]
    assert "sql" not in plan["pending"][0]


async def test_checksum_is_the_replay_checksum_and_follows_the_rows(
    settings: Settings,
    stores: Stores,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert settings.database_url
    log = await EmbeddedLog(settings.database_url).open()
    try:
        publisher = Publisher(log)
        for i in range(5):
            await publisher.publish(play(f"u{i}", f"c{i}", 120.0 * (i + 1), 6000.0))
        pipeline = ProjectionPipeline(by_name("playback"), stores, log)
        await ProjectorLoop(pipeline, log, batch_size=100, linger_ms=0).catch_up()
    finally:
        await log.close()
    monkeypatch.setenv("DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("MGW_DATA_DIR", str(settings.data_dir))

    # the CLI runs its own event loop: off this test's loop, in a thread
    code = await asyncio.get_running_loop().run_in_executor(
        None, main, ["checksum", "playback", "library", "--json", "--no-progress"]
    )
    sums = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and set(sums) == {"playback", "library"}
    assert sums["playback"] == await maintenance.checksum(stores, by_name("playback"))
    assert sums["library"] == await maintenance.checksum(stores, by_name("library"))

    async with stores.pg.connection() as conn:
        await conn.execute("UPDATE playback_positions SET position_s = position_s + 1")
    code = await asyncio.get_running_loop().run_in_executor(
        None, main, ["checksum", "playback", "--json", "--no-progress"]
    )
    after = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and after["playback"] != sums["playback"]

    code = await asyncio.get_running_loop().run_in_executor(
        None, main, ["checksum", "nonesuch", "--no-progress"]
    )
    assert code == 2
    assert "unknown projector 'nonesuch'" in capsys.readouterr().err


def test_the_test_database_has_every_shipped_migration_with_its_checksum(
    db_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_uri)
    code, got = _cli(capsys, "migrate", "status")
    assert code == 0
    assert [m["name"] for m in got["migrations"]] == SHIPPED
    assert {m["state"] for m in got["migrations"]} == {"applied"}
    assert all(m["recorded_checksum"] == m["checksum"] for m in got["migrations"])
    assert all(m["applied_at"] for m in got["migrations"])


def test_rows_from_before_checksums_take_the_file_as_it_is_now(
    db_uri: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", db_uri)
    old = SHIPPED[:2]
    with psycopg.connect(db_uri, autocommit=True) as conn:  # as an older mgw left them
        conn.execute("UPDATE schema_migrations SET checksum = NULL WHERE name = ANY(%s)", (old,))
    code, got = _cli(capsys, "migrate", "status")
    unknown = [m["name"] for m in got["migrations"] if m["recorded_checksum"] is None]
    assert code == 0 and unknown == old
    assert {m["state"] for m in got["migrations"]} == {"applied"}  # unknown is not edited
    main(["migrate", "status"])
    assert "no checksum recorded" in capsys.readouterr().out
    code, up = _cli(capsys, "migrate", "up")
    assert code == 0 and up["applied"] == []
    code, got = _cli(capsys, "migrate", "status")
    assert all(m["recorded_checksum"] == m["checksum"] for m in got["migrations"])


def test_statements_split_outside_quotes_bodies_and_comments() -> None:
    sql = (
        "-- one; two\nCREATE TABLE t (x text DEFAULT 'a;b');\n/* ; */"
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $fn$;\n"
        'SELECT "odd;name" FROM t'
    )
    assert statements(sql) == [
        "CREATE TABLE t (x text DEFAULT 'a;b')",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $fn$ SELECT 1; $fn$",
        'SELECT "odd;name" FROM t',
    ]
    # every shipped file splits into statements that each start with a keyword
    for path in MIGRATIONS_DIR.glob("*.sql"):
        for st in statements(path.read_text()):
            assert st.split()[0].upper() in KEYWORDS, (path, st)


async def test_checksum_prints_a_table_names_valid_projectors_and_refuses_an_edited_schema(
    settings: Settings,
    stores: Stores,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.database_url or "")
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("MGW_DATA_DIR", str(settings.data_dir))
    loop = asyncio.get_running_loop()

    code = await loop.run_in_executor(
        None, main, ["checksum", "playback", "catalog", "--no-progress"]
    )
    lines = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    table = dict(line.split() for line in lines)
    assert table == {
        "playback": await maintenance.checksum(stores, by_name("playback")),
        "catalog": await maintenance.checksum(stores, by_name("catalog")),
    }

    code = await loop.run_in_executor(None, main, ["checksum", "playbak", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "playbak" in err
    assert all(name in err for name in ("playback", "library", "catalog"))  # the valid names

    # a command that migrates as it starts refuses an edited schema by name, not a traceback
    async with stores.pg.connection() as conn:
        await conn.execute(
            "UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE name = %s",
            (SHIPPED[4],),
        )
    code = await loop.run_in_executor(None, main, ["checksum", "playback", "--no-progress"])
    out, err = capsys.readouterr()
    assert code == 1 and out == ""
    assert SHIPPED[4] in err and "--allow-edited" in err and "Traceback" not in err
