"""The embedded runner: every projector in-process, one asyncio loop each.

It reads the projector's topic-partitions through the log port (so it runs on
the embedded log and on Kafka alike), hands batches of up to ``batch_size``
records to the shared pipeline and resumes from the watermarks after a restart.
When a batch comes back short it lingers ``batch_linger_ms`` for more, so a
steady trickle still makes batches; when everything is caught up it sleeps
until the log wakes it.

A failed batch is retried from the watermarks with backoff (core/backoff.py): a
transient failure (the database or broker away) for as long as it takes, logged once
for all loops when it starts and once when it ends; any other failure
``GIVE_UP_AFTER`` times, then that projector's loop stops and says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from core.backoff import Backoff, Outages, Retry, pause
from core.metrics import PROJECTOR_LAG, PROJECTOR_LAG_SECONDS
from projections.base import Projector, Stores
from streams.log import EventLog, LogRecord, wait_any
from streams.processing import BatchResult, Decoded, ProjectionPipeline, load_watermarks

log = logging.getLogger("mgw.runner")
ProgressHook = Callable[[BatchResult], None]
#: (index, count): a loop owns the partitions p with p % count == index. Shards of one
#: projector run in separate processes to use more cores, or as lanes in one process
#: (EmbeddedRunner); each partition has one owner, and the checkpoint lock keeps even a
#: misconfigured overlap from applying twice.
Shard = tuple[int, int]
#: between failed batches: 0.2 s doubling up to 10 s, with full jitter
BACKOFF = Backoff(first=0.2, cap=10.0)
#: failures in a row that are not transient (a bug, a missing table) before a loop stops
GIVE_UP_AFTER = 5


def parse_shard(text: str) -> Shard:
    """'1/4' -> (1, 4)."""
    try:
        i, n = (int(x) for x in text.split("/", 1))
    except ValueError:
        raise ValueError(f"shard must look like I/N, e.g. 0/2 (got {text!r})") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard index must be in 0..N-1 (got {text!r})")
    return i, n


async def oldest_age(log_: EventLog, topic: str, behind: Iterable[tuple[int, int]]) -> float | None:
    """The lag in time of a reader of ``topic`` at ``behind`` ((partition, next offset) of
    each partition it has not read to the end): seconds since the oldest of those next
    records was appended, by the time the log keeps with each record (the append time in
    the embedded log, the record timestamp in Kafka), not ``occurred_at``, which a feed or
    a device may set long before the record reached the log. 0.0 when nothing is behind;
    None when the log handed over none of the records (a Kafka fetch still under way)."""
    parts = list(behind)
    if not parts:
        return 0.0
    got = await asyncio.gather(*(log_.read(topic, p, offset, 1) for p, offset in parts))
    stamps = [records[0].timestamp_ms for records in got if records]
    if not stamps:
        return None
    return max(0.0, time.time() - min(stamps) / 1000)


def lane_shards(shard: Shard, lanes: int) -> list[Shard]:
    """Split a shard into ``lanes`` shards that together own exactly its partitions:
    p % (n * lanes) == i + n * j for some lane j  <=>  p % n == i."""
    i, n = shard
    return [(i + n * j, n * lanes) for j in range(lanes)]


class LagBoard:
    """The lag gauges of one projector in one process. Each loop (lane) knows only its
    own partitions; the gauges show the lanes' lag summed and the oldest of their ages."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lag: dict[tuple[str, int], int] = {}
        self._age: dict[tuple[str, int], float] = {}

    def report(self, topic: str, lane: int, lag: int, age: float | None) -> None:
        self._lag[(topic, lane)] = lag
        PROJECTOR_LAG.labels(self.name, topic).set(
            sum(v for (t, _), v in self._lag.items() if t == topic)
        )
        if age is not None:
            self._age[(topic, lane)] = age
            PROJECTOR_LAG_SECONDS.labels(self.name, topic).set(
                max(v for (t, _), v in self._age.items() if t == topic)
            )


@dataclass(frozen=True, slots=True)
class Fetched:
    positions: dict[tuple[str, int], int]  # where the read started
    records: list[LogRecord]
    decoded: Decoded | None
    after: dict[tuple[str, int], int]  # the positions past these records


class ProjectorLoop:
    def __init__(
        self,
        pipeline: ProjectionPipeline,
        log_: EventLog,
        *,
        batch_size: int = 5000,
        linger_ms: int = 10,
        shard: Shard = (0, 1),
        outages: Outages | None = None,
        lag_board: LagBoard | None = None,
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        """``outages`` is shared by the loops of one runner, so a database that goes away
        is reported once, not once per projector; ``lag_board`` by the lanes of one
        projector, so its lag gauges add theirs up."""
        self.pipeline = pipeline
        self.log = log_
        self.shard = shard
        self.lag_board = lag_board or LagBoard(pipeline.name)
        #: an extra lane applies a batch only holding one of these (EmbeddedRunner)
        self.slots = slots
        #: the failures in a row of ``run``, and how long it waits before the next try
        self.retry = Retry(
            f"projector {pipeline.name}",
            log,
            backoff=BACKOFF,
            give_up_after=GIVE_UP_AFTER,
            postgres=getattr(pipeline.stores.pg, "conninfo", None),
            outages=outages or Outages(log),
            gives_up=f"projector {pipeline.name} stops; its read model falls behind until "
            "the cause is fixed and the process restarted (it resumes where it stopped)",
        )
        #: why the loop stopped for good (a failure that is not transient), or None
        self.failure: BaseException | None = None
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

    async def _read(
        self, limit: int, positions: dict[tuple[str, int], int], after: dict[tuple[str, int], int]
    ) -> list[LogRecord]:
        """Up to ``limit`` records from ``positions`` on; ``after`` gets the position past
        the last record read of each partition."""
        batch: list[LogRecord] = []
        parts = list(positions)
        if not parts:  # a shard with more processes than partitions owns nothing
            return batch
        self._rr = (self._rr + 1) % len(parts)
        for tp in parts[self._rr :] + parts[: self._rr]:  # rotate: no partition starves
            if len(batch) >= limit:
                break
            got = await self.log.read(tp[0], tp[1], positions[tp], limit - len(batch))
            if got:
                batch.extend(got)
                after[tp] = got[-1].offset + 1
        return batch

    async def _fetch(self, positions: dict[tuple[str, int], int]) -> Fetched:
        after = dict(positions)
        batch = await self._read(self.batch_size, positions, after)
        if batch and len(batch) < self.batch_size and self.linger > 0:
            await asyncio.sleep(self.linger)
            batch.extend(await self._read(self.batch_size - len(batch), dict(after), after))
        # Decoding is CPU work: done here, it overlaps the previous batch's database waits.
        decoded = self.pipeline.decode(batch) if batch else None
        return Fetched(dict(positions), batch, decoded, after)

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
        if len(fetched.records) >= self.batch_size:  # more is likely waiting
            self._prefetch = asyncio.ensure_future(self._fetch(dict(fetched.after)))
        try:
            if self.slots is None:
                result = await self.pipeline.process(fetched.records, fetched.decoded)
            else:
                async with self.slots:
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
        """Records behind the log's end per topic, over this loop's own partitions (a
        shard's or lane's others are not its lag)."""
        out: dict[str, int] = {}
        mine = self.positions
        for topic in self.pipeline.projector.topics:
            ends = await self.log.end_offsets(topic)
            behind = [(p, mine[(topic, p)]) for p, e in ends.items() if e > mine.get((topic, p), e)]
            out[topic] = sum(ends[p] - at for p, at in behind)
            age = await oldest_age(self.log, topic, behind)
            self.lag_board.report(topic, self.shard[0], out[topic], age)
        return out

    async def run(self, stop: asyncio.Event, *, idle_wait: float = 1.0) -> None:
        retry = self.retry
        loaded = False
        lag_at = 0.0
        while not stop.is_set():
            try:
                if not loaded:
                    await self.load_positions()
                    loaded = True
                result = await self.step()
                if result is None or time.monotonic() - lag_at >= 1.0:
                    await self.lag()  # keeps the lag gauge current for /metrics
                    lag_at = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A transient failure (database restart, broker away): retry from the
                # watermarks, for as long as it takes; the checkpoint makes the retry
                # harmless. Anything else (a bug, a missing table) a few times, then the
                # loop stops: retrying would only fill the log.
                loaded = False
                self.cancel_prefetch()
                delay = retry.failed(exc)
                if delay is None:  # logged: what failed, that the loop stops, what to do
                    self.failure = exc
                    break
                await pause(delay, stop)
                continue
            retry.succeeded()
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
        lanes: dict[str, int] | None = None,
    ) -> None:
        """``lanes``: loops that share a projector's partitions in this process (default
        one). A loop alternates Python work (read, decode, fold) with waits on PostgreSQL;
        with two lanes one folds while the other waits, and one process keeps its core busy
        (bench/projection_throughput.py)."""
        self.outages = Outages(log)
        self.loops: list[ProjectorLoop] = []
        # Every projector's first lane applies freely; the extra lanes of all projectors
        # share lanes - 1 slots, so lanes add at most that many transactions to the
        # process at once. One projector catching up alone gets all its lanes; ten catching
        # up together (a demo load) do not multiply the transactions competing for the
        # cores and the pool, which made each last longer until the pool timed out.
        extra = max((lanes or {}).values(), default=1) - 1
        self.slots = asyncio.Semaphore(extra) if extra > 0 else None
        for p in projectors:
            shard = (shards or {}).get(p.name, (0, 1))
            n = (lanes or {}).get(p.name, 1)
            if n > 1:
                n = max(1, min(n, _owned(log_, p, shard)))
            board = LagBoard(p.name)
            for j, lane in enumerate(lane_shards(shard, n)):
                self.loops.append(
                    ProjectorLoop(
                        ProjectionPipeline(p, stores, log_),
                        log_,
                        batch_size=batch_size,
                        linger_ms=linger_ms,
                        shard=lane,
                        outages=self.outages,
                        lag_board=board,
                        slots=self.slots if j > 0 else None,
                    )
                )
        self.stores = stores
        self.projectors = projectors

    async def prepare(self) -> None:
        for p in self.projectors:
            await p.prepare(self.stores)

    def stopped(self) -> dict[str, str]:
        """The projectors whose loop stopped for good, with the error that stopped it."""
        return {
            loop.name: f"{type(loop.failure).__name__}: {loop.failure}"
            for loop in self.loops
            if loop.failure is not None
        }

    async def catch_up(self) -> int:
        """Apply everything in the log now (every loop at once); the records applied."""
        await self.prepare()
        return sum(await asyncio.gather(*(loop.catch_up() for loop in self.loops)))

    async def run(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set. A loop that stops for good does not stop the others."""
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


def _owned(log_: EventLog, projector: Projector, shard: Shard) -> int:
    """The most partitions ``shard`` owns of any of the projector's topics: more lanes
    than that would own nothing."""
    i, n = shard
    return max(sum(1 for p in range(log_.partitions(t)) if p % n == i) for t in projector.topics)
