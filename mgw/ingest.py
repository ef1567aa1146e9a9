"""`mgw ingest PLATFORM PATH...`: a platform's feed files onto the log, then resolved.

Steps: bring resolution and availability up to date (the diff needs them), parse and
normalize the files, append what changed, and, unless ``--no-wait``, run the catalog
projectors until the new records are resolved into canonical content. A projector
already running in `mgw up` is no obstacle: checkpoint locks let both apply batches.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core.gc_tuning import tune_for_batches
from core.settings import Settings
from domain.catalog import PLATFORMS, FeedError
from domain.catalog.platforms import platform_module
from mgw.platform import Platform, open_platform
from projections.base import Stores
from projections.registry import by_name
from streams.feeds import IngestSummary, ingest_files
from streams.processing import BatchResult, ProjectionPipeline
from streams.runner import ProjectorLoop

SHOW_REJECTS = 20


def feed_plan(platform: str, paths: Sequence[Path]) -> list[tuple[str, list[Path]]]:
    """(platform, files) to ingest; ``all DIR`` reads DIR/manifest.json from
    `mgw feeds generate`. Raises FeedError with what to do."""
    if platform == "all":
        if len(paths) != 1 or not paths[0].is_dir():
            raise FeedError("path", "`mgw ingest all` takes one directory holding manifest.json")
        manifest = paths[0] / "manifest.json"
        try:
            feeds = json.loads(manifest.read_text())["feeds"]
        except (OSError, ValueError, KeyError) as exc:
            raise FeedError("path", f"cannot read {manifest}: {exc}") from None
        return [(p, [paths[0] / feeds[p]]) for p in PLATFORMS if p in feeds]
    platform_module(platform)  # unknown platform: FeedError naming the known ones
    if not paths:
        raise FeedError("path", "give at least one feed file")
    for p in paths:
        if not p.is_file():
            raise FeedError("path", f"{p} is not a readable file")
    return [(platform, list(paths))]


async def catch_up(
    pf: Platform, stores: Stores, names: Sequence[str], *, progress: bool
) -> dict[str, int]:
    """Run the named projectors until they have applied everything in the log now."""
    applied: dict[str, int] = {}
    for name in names:
        projector = by_name(name)
        await projector.prepare(stores)
        loop = ProjectorLoop(
            ProjectionPipeline(projector, stores, pf.log),
            pf.log,
            batch_size=pf.settings.batch_size,
            linger_ms=0,
        )
        with tqdm(desc=f"project {name}", unit="rec", disable=not progress, leave=False) as bar:

            def advance(result: BatchResult, bar: Any = bar) -> None:
                bar.update(result.applied + result.skipped + result.dead_letters)

            applied[name] = await loop.catch_up(advance)
    return applied


def _report(s: IngestSummary) -> None:
    print(
        f"{s.platform}: read {s.read:,} records, appended {s.appended:,} events, "
        f"unchanged {s.unchanged:,}, duplicates {s.duplicates:,}, ended {s.ended:,}, "
        f"rejected {len(s.rejected):,}"
    )
    for r in s.rejected[:SHOW_REJECTS]:
        print(f"  rejected {r}")
    if len(s.rejected) > SHOW_REJECTS:
        print(f"  ... and {len(s.rejected) - SHOW_REJECTS:,} more rejected records")


async def run_ingest(
    settings: Settings,
    platform: str,
    paths: Sequence[Path],
    *,
    progress: bool = True,
    wait: bool = True,
    as_json: bool = False,
) -> int:
    try:
        plan = feed_plan(platform, paths)
    except FeedError as exc:
        print(f"mgw ingest: {exc.message}", file=sys.stderr)
        return 2
    async with open_platform(settings, with_vectors=False) as pf:
        # many small dicts per record: the collector's passes cost ~14 % of an ingest
        # (bench/ingest_throughput.py, scale 3), as in the workers
        tune_for_batches()
        stores = pf.stores
        if True:
            await catch_up(pf, stores, ["resolution", "availability"], progress=progress)
            summaries = []
            for plat, files in plan:
                with (
                    tqdm(desc=f"read {plat}", unit="rec", disable=not progress) as parsed,
                    tqdm(desc=f"append {plat}", unit="ev", disable=not progress) as appended,
                ):
                    try:
                        s = await ingest_files(
                            stores,
                            pf.publisher,
                            plat,
                            files,
                            on_parsed=parsed.update,
                            on_appended=appended.update,
                        )
                    except FeedError as exc:
                        print(f"mgw ingest: {plat}: {exc.message}", file=sys.stderr)
                        return 2
                summaries.append(s)
                if not as_json:
                    _report(s)
            if wait:
                names = ["resolution", "availability", "catalog"]
                done = await catch_up(pf, stores, names, progress=progress)
                if not as_json:
                    print("projected: " + ", ".join(f"{n} {c:,}" for n, c in done.items()))
            if as_json:
                print(json.dumps({"feeds": [s.as_dict() for s in summaries]}))
    return 0
