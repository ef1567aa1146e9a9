"""`mgw ingest` as an operator runs it: a feed file in, resolved content out; unchanged
feeds append nothing; dropped titles end; bad input is reported, not fatal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg

from core.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def mgw(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url or "",
        "REDIS_URL": settings.redis_url or "",
        "MGW_DATA_DIR": str(settings.data_dir),
    }
    return subprocess.run(
        [sys.executable, "-m", "mgw.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def title(nid: int, name: str, year: int, countries: tuple[str, ...] = ("US",)) -> dict[str, Any]:
    start = (date.today() - timedelta(days=3)).isoformat()
    return {
        "netflixId": nid,
        "type": "movie",
        "title": name,
        "releaseYear": year,
        "runtimeMinutes": 100,
        "availability": [
            {"country": c, "plan": "standard", "maxQuality": "HD", "startDate": start}
            for c in countries
        ],
    }


def write_feed(path: Path, titles: list[Any]) -> Path:
    path.write_text(json.dumps({"titles": titles}))
    return path


def rows(settings: Settings, sql: str) -> list[tuple[Any, ...]]:
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        return conn.execute(sql).fetchall()


def test_ingest_end_to_end_then_unchanged_then_dropped(settings: Settings, tmp_path: Path) -> None:
    feed = write_feed(
        tmp_path / "netflix.json",
        [
            title(80000001, "The Matrix", 1999, ("US", "GB")),
            title(80000002, "Heat", 1995),
            {"netflixId": 80000003, "type": "movie", "title": "Bad Date", "releaseYear": "19x5"},
            title(80000001, "The Matrix", 1999),  # the same id again
        ],
    )
    first = mgw(settings, "ingest", "netflix", str(feed), "--no-progress")
    assert first.returncode == 0, first.stderr
    assert "netflix: read 3 records, appended 4 events" in first.stdout  # observed + offers
    assert "duplicates 1" in first.stdout and "rejected 1" in first.stdout
    assert "netflix.json" in first.stdout and "releaseYear" in first.stdout  # where, and why
    titles = rows(settings, "SELECT title FROM content ORDER BY title")
    assert titles == [("Heat",), ("The Matrix",)]

    again = mgw(settings, "ingest", "netflix", str(feed), "--no-progress", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])["feeds"][0]
    assert summary["appended"] == 0 and summary["unchanged"] == 2

    # Heat leaves the feed, The Matrix leaves GB
    write_feed(feed, [title(80000001, "The Matrix", 1999)])
    dropped = mgw(settings, "ingest", "netflix", str(feed), "--no-progress", "--json")
    summary = json.loads(dropped.stdout.strip().splitlines()[-1])["feeds"][0]
    assert summary["ended"] == 2, dropped.stdout
    assert rows(settings, "SELECT platform_id, region FROM availability ORDER BY 1, 2") == [
        ("80000001", "US")
    ]


def test_ingest_refuses_unknown_platforms_and_unreadable_files(
    settings: Settings, tmp_path: Path
) -> None:
    feed = write_feed(tmp_path / "f.json", [title(1, "X", 2000)])
    unknown = mgw(settings, "ingest", "myspace", str(feed))
    assert unknown.returncode == 2 and "netflix" in unknown.stderr  # names the known ones
    missing = mgw(settings, "ingest", "netflix", str(tmp_path / "nope.json"))
    assert missing.returncode == 2 and "nope.json" in missing.stderr
    broken = tmp_path / "broken.json"
    broken.write_text('{"titles": [')
    bad = mgw(settings, "ingest", "netflix", str(broken), "--no-progress")
    assert bad.returncode == 2 and "broken.json" in bad.stderr and "JSON" in bad.stderr
    assert rows(settings, "SELECT count(*) FROM log_records") == [(0,)]  # nothing appended


def test_generate_then_eval_resolution_meets_the_target(settings: Settings, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    gen = mgw(settings, "feeds", "generate", "--out", str(feeds))
    assert gen.returncode == 0, gen.stderr
    assert sorted(p.name for p in feeds.iterdir())[:3] == [
        "apple_tv_plus.json",
        "disney_plus.xml",
        "hbo_max.xml",
    ]
    ev = mgw(settings, "eval", "resolution", "--feeds", str(feeds))
    assert ev.returncode == 0, ev.stderr
    scores = json.loads(ev.stdout.strip().splitlines()[-1])
    assert scores["unresolved"] == 0 and scores["records"] > 20000
    assert scores["f1"] >= 0.98, scores
    assert scores["precision"] >= 0.98 and scores["recall"] >= 0.98
