"""The embedded runner: every projector in-process, one asyncio loop each.

It reads the projector's topic-partitions through the log port (so it runs on
the embedded log and on Kafka alike), hands batches of up to ``batch_size``
records to the shared pipeline and resumes from the watermarks after a restart.
When a batch comes back short it lingers ``batch_linger_ms`` for more, so a
steady trickle still makes batches; when everything is caught up it sleeps
until the log wakes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from core.metrics import PROJECTOR_LAG
from projections.base import Projector, Stores
from streams.log import EventLog, LogRecord, wait_any
from streams.processing import BatchResult, Decoded, ProjectionPipeline, load_watermarks

log = logging.getLogger("mgw.runner")
ProgressHook = Callable[[BatchResult], None]
#: (index, count): a loop owns the partitions p with p % count == index. Shards of one
#: projector run in separate processes to use more cores; each partition has one owner,
#: and the checkpoint lock keeps even a misconfigured overlap from applying twice.
Shard = tuple[int, int]


def parse_shard(text: str) -> Shard:
    """'1/4' -> (1, 4)."""
    try:
        i, n = (int(x) for x in text.split("/", 1))
    except ValueError:
        raise ValueError(f"shard must look like I/N, e.g. 0/2 (got {text!r})") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard index must be in 0..N-1 (got {text!r})")
    return i, n


@dataclass(frozen=True, slots=True)
class Fetched:
    positions: dict[tuple[str, int], int]  # where the read started
    records: list[LogRecord]
    decoded: Decoded | None


class ProjectorLoop:
    def __init__(
        self,
        pipeline: ProjectionPipeline,
        log_: EventLog,
        *,
        batch_size: int = 5000,
        linger_ms: int = 10,
        shard: Shard = (0, 1),
    ) -> None:
        self.pipeline = pipeline
        self.log = log_
        self.shard = shard
        self.batch_size = batch_size
        self.linger = linger_ms / 1000
        self.positions: dict[tuple[str, int], int] = {}
        self._rr = 0
        self._prefetch: asyncio.Future[Fetched] | None = None

    @property
    def name(self) -> str:
        return self.pipeline.name

    async def load_positions(self) -> None:
        self.cancel_prefetch()
        marks = await load_watermarks(self.pipeline.stores, self.name)
        self.positions = {}
        for topic in self.pipeline.projector.topics:
            for p in range(self.log.partitions(topic)):
                if p % self.shard[1] == self.shard[0]:
                    self.positions[(topic, p)] = marks.get((topic, p), 0)

    async def _read(self, limit: int, positions: dict[tuple[str, int], int]) -> list[LogRecord]:
        batch: list[LogRecord] = []
        parts = list(positions)
        if not parts:  # a shard with more processes than partitions owns nothing
            return batch
        self._rr = (self._rr + 1) % len(parts)
        for tp in parts[self._rr :] + parts[: self._rr]:  # rotate: no partition starves
            if len(batch) >= limit:
                break
            got = await self.log.read(tp[0], tp[1], positions[tp], limit - len(batch))
            batch.extend(got)
        return batch

    async def _fetch(self, positions: dict[tuple[str, int], int]) -> Fetched:
        batch = await self._read(self.batch_size, positions)
        if batch and len(batch) < self.batch_size and self.linger > 0:
            await asyncio.sleep(self.linger)
            after = dict(positions)
            after.update({(r.topic, r.partition): r.offset + 1 for r in batch})
            batch.extend(await self._read(self.batch_size - len(batch), after))
        # Decoding is CPU work: done here, it overlaps the previous batch's database waits.
        return Fetched(dict(positions), batch, self.pipeline.decode(batch) if batch else None)

    async def step(self) -> BatchResult | None:
        """Read and apply one batch; None when nothing was waiting.

        While a batch is applied, the next one is already being read and decoded
        (PostgreSQL and Redis work on the other core meanwhile), so a catching-up
        projector keeps both busy.
        """
        prefetch, self._prefetch = self._prefetch, None
        fetched = await prefetch if prefetch is not None else None
        if fetched is None or fetched.positions != self.positions:
            fetched = await self._fetch(self.positions)
        if not fetched.records:
            return None
        after = dict(self.positions)
        after.update({(r.topic, r.partition): r.offset + 1 for r in fetched.records})
        if len(fetched.records) >= self.batch_size:  # more is likely waiting
            self._prefetch = asyncio.ensure_future(self._fetch(after))
        try:
            result = await self.pipeline.process(fetched.records, fetched.decoded)
        except BaseException:
            self.cancel_prefetch()
            raise
        for tp, nxt in result.next_offsets.items():
            self.positions[tp] = max(self.positions.get(tp, 0), nxt)
        return result

    def cancel_prefetch(self) -> None:
        if self._prefetch is not None:
            self._prefetch.cancel()
            self._prefetch = None

    async def lag(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for topic in self.pipeline.projector.topics:
            ends = await self.log.end_offsets(topic)
            out[topic] = sum(max(0, e - self.positions.get((topic, p), 0)) for p, e in ends.items())
            PROJECTOR_LAG.labels(self.name, topic).set(out[topic])
        return out

    async def run(self, stop: asyncio.Event, *, idle_wait: float = 1.0) -> None:
        backoff = 0.2
        loaded = False
        lag_at = 0.0
        while not stop.is_set():
            try:
                if not loaded:
                    await self.load_positions()
                    loaded = True
                result = await self.step()
                backoff = 0.2
                if result is None or time.monotonic() - lag_at >= 1.0:
                    await self.lag()  # keeps the lag gauge current for /metrics
                    lag_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A transient failure (database restart, broker away): retry from the
                # watermarks; the checkpoint makes the retry harmless. Never give up: a
                # projector that stopped for good would leave its read model stale.
                log.exception("projector %s: batch failed, retrying in %.1fs", self.name, backoff)
                loaded = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            if result is None:
                waits = [(t, p, o) for (t, p), o in self.positions.items()]
                waiter = asyncio.ensure_future(wait_any(self.log, waits, idle_wait))
                stopper = asyncio.ensure_future(stop.wait())
                await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                for f in (waiter, stopper):
                    f.cancel()
        self.cancel_prefetch()

    async def catch_up(self, on_batch: ProgressHook | None = None) -> int:
        """Apply everything in the log now, then return the number of records applied."""
        await self.load_positions()
        applied = 0
        while True:
            result = await self.step()
            if result is None:
                return applied
            applied += result.applied
            if on_batch:
                on_batch(result)


class EmbeddedRunner:
    """Runs a loop per projector until ``stop`` is set."""

    def __init__(
        self,
        log_: EventLog,
        stores: Stores,
        projectors: Sequence[Projector],
        *,
        batch_size: int = 5000,
        linger_ms: int = 10,
        shards: dict[str, Shard] | None = None,
    ) -> None:
        self.loops = [
            ProjectorLoop(
                ProjectionPipeline(p, stores, log_),
                log_,
                batch_size=batch_size,
                linger_ms=linger_ms,
                shard=(shards or {}).get(p.name, (0, 1)),
            )
            for p in projectors
        ]
        self.stores = stores
        self.projectors = projectors

    async def prepare(self) -> None:
        for p in self.projectors:
            await p.prepare(self.stores)

    async def run(self, stop: asyncio.Event) -> None:
        await self.prepare()
        started = time.monotonic()
        tasks = [
            asyncio.create_task(loop.run(stop), name=f"projector-{loop.name}")
            for loop in self.loops
        ]
        log.info("runner started %d projectors in %.2fs", len(tasks), time.monotonic() - started)
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
