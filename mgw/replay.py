"""`mgw replay PROJECTOR`: rebuild one read model from the whole log."""

from __future__ import annotations

import time

from tqdm import tqdm

from core.gc_tuning import tune_for_batches
from core.settings import Settings
from mgw.platform import open_platform
from projections import maintenance
from projections.registry import by_name
from streams.processing import BatchResult, ProjectionPipeline
from streams.runner import ProjectorLoop

#: records per replay batch: nobody waits on a replay's read model, so batches may be large;
#: a larger batch folds more of one key's events into one row (fewer rows to write)
REPLAY_BATCH_SIZE = 50_000


async def run_replay(
    settings: Settings, name: str, *, progress: bool = True, batch_size: int | None = None
) -> int:
    try:
        projector = by_name(name)
    except KeyError as exc:
        print(exc.args[0])
        return 2
    async with open_platform(settings) as pf:
        before = await maintenance.checksum(pf.stores, projector)
        total = 0
        for topic in projector.topics:
            total += sum((await pf.log.end_offsets(topic)).values())
        await maintenance.clear(pf.stores, projector)
        loop = ProjectorLoop(
            ProjectionPipeline(projector, pf.stores, pf.log, dead_letters=False, emit=False),
            pf.log,
            batch_size=batch_size or REPLAY_BATCH_SIZE,
            linger_ms=0,
        )
        tune_for_batches()
        started = time.perf_counter()
        with tqdm(total=total, desc=f"replay {name}", unit="rec", disable=not progress) as bar:

            def advance(result: BatchResult) -> None:
                bar.update(result.applied + result.skipped + result.dead_letters)

            applied = await loop.catch_up(advance)
        elapsed = time.perf_counter() - started
        after = await maintenance.checksum(pf.stores, projector)
        same = "identical" if before == after else "DIFFERENT (was the projection stale?)"
        print(
            f"replayed {name}: {applied} records applied in {elapsed:.1f}s "
            f"({applied / max(elapsed, 1e-9):,.0f}/s)"
        )
        print(f"checksum before {before} after {after}: {same}")
    return 0
