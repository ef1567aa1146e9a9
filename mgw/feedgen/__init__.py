"""Synthetic partner feeds for the eight platforms, built from the real MovieLens titles.

    generate(out, scale=1, seed=7) writes <out>/<platform>.<ext> in each platform's native
    format, <out>/truth.csv (platform, platform_id, entity) and <out>/manifest.json.

The same seed and scale give the same files, except the availability dates: windows are
relative to today (UTC midnight of the real current date, unless `now` is given), so a demo
always has titles that are new, coming soon and leaving soon."""

from __future__ import annotations

import csv
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from domain.catalog import PLATFORMS
from domain.catalog.platforms import NORMALIZERS
from mgw.feedgen.catalog import SERIES, load_titles, synthetic_copies
from mgw.feedgen.listings import Planner
from mgw.feedgen.writers import (
    AppleTvPlusWriter,
    HuluWriter,
    NetflixWriter,
    ParamountPlusWriter,
    PeacockWriter,
    PrimeVideoWriter,
    Writer,
)
from mgw.feedgen.xml_writers import DisneyPlusWriter, HboMaxWriter

WRITERS: dict[str, type[Writer]] = {
    "netflix": NetflixWriter,
    "prime_video": PrimeVideoWriter,
    "disney_plus": DisneyPlusWriter,
    "hbo_max": HboMaxWriter,
    "hulu": HuluWriter,
    "apple_tv_plus": AppleTvPlusWriter,
    "paramount_plus": ParamountPlusWriter,
    "peacock": PeacockWriter,
}
assert tuple(WRITERS) == PLATFORMS


def feed_name(platform: str) -> str:
    return f"{platform}.{NORMALIZERS[platform].EXTENSION}"


def generate(
    out: Path,
    scale: int = 1,
    seed: int = 7,
    progress: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Write the eight feeds, truth.csv and manifest.json under `out`; returns
    {platform: records written, "titles": movies, "series": n, "truth": path,
    "noise": {kind: count}, "windows": {kind: count}, "seconds": elapsed}."""
    if scale < 1:
        raise ValueError("scale must be >= 1")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    today = (now or datetime.now(UTC)).astimezone(UTC)
    today = today.replace(hour=0, minute=0, second=0, microsecond=0)
    titles = load_titles()
    titles += synthetic_copies(titles, scale, seed)
    if progress:
        print(f"feedgen: {len(titles):,} titles, {len(SERIES)} series, seed {seed}", flush=True)
    planner = Planner(seed, today)
    writers = {p: WRITERS[p](out / feed_name(p)) for p in PLATFORMS}
    truth_path = out / "truth.csv"
    try:
        with truth_path.open("w", encoding="utf-8", newline="") as fh:
            truth = csv.writer(fh, lineterminator="\n")
            truth.writerow(("platform", "platform_id", "entity"))
            for n, (platform, item) in enumerate(planner.listings(titles), 1):
                writers[platform].write(item)
                truth.writerow((platform, item.platform_id, item.entity))
                truth.writerows((platform, e.platform_id, e.entity) for e in item.episodes)
                if progress and n % 50_000 == 0:
                    print(f"feedgen: {n:,} listings", flush=True)
    finally:
        for w in writers.values():
            w.close()
    manifest = {"seed": seed, "scale": scale, "feeds": {p: feed_name(p) for p in PLATFORMS}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    summary: dict[str, Any] = {p: writers[p].records for p in PLATFORMS}
    summary.update(
        titles=len(titles),
        series=len(SERIES),
        truth=str(truth_path),
        noise=dict(sorted(planner.noise.items())),
        windows=dict(sorted(planner.windows.items())),
        seconds=round(time.perf_counter() - started, 2),
    )
    if progress:
        print(f"feedgen: done in {summary['seconds']} s", flush=True)
    return summary
