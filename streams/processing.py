"""The commit protocol both runtimes share, for one batch of one projector.

1. decode and check every record; the ones that fail become dead letters;
2. one PostgreSQL transaction: lock the projector's checkpoints for the batch's
   partitions, drop records at or below them (a redelivery), apply the rest, send
   the new dead letters, advance the checkpoints, bring Redis/Qdrant in line with
   the rows (idempotent writes, made while the locks are held, so owners of a
   partition write side stores in the same order as rows), and advance the
   watermark: everything below it is fully applied;
3. commit. (Under Faust or the confluent runtime the Kafka offset is committed after
   this.) Read-your-writes waits on the watermark and the embedded runner resumes
   from it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from core import fanout, tracing
from core.backoff import Backoff, Retry, is_transient
from core.codec import AvroCodec, CodecError, default_codec
from core.metrics import (
    BATCH_SECONDS,
    BATCH_SIZE,
    PUSHES_FAILED,
    PUSHES_PUBLISHED,
    RECORDS_APPLIED,
    RECORDS_SKIPPED,
)
from projections.base import Envelope, Output, Projector, RejectedEvent, Stores
from streams.dead_letters import DeadLetter, send_dead_letters
from streams.log import EventLog, LogRecord
from streams.publisher import Publisher

log = logging.getLogger("mgw.processing")


Decoded = tuple[list[Envelope], list[DeadLetter]]


@dataclass(frozen=True, slots=True)
class BatchResult:
    applied: int
    skipped: int
    dead_letters: int
    next_offsets: dict[tuple[str, int], int]


@dataclass(frozen=True, slots=True)
class Reapplied:
    """What ``ProjectionPipeline.reapply`` made of a dead letter: ``applied``,
    ``already_applied`` (an earlier retry did), ``failed`` (``error`` says why) or
    ``not_reached`` (the projector has not read that far yet)."""

    outcome: str
    error: str | None = None


class _StillDead(Exception):
    """Rolls the retry's transaction back (its claim included)."""


class ProjectionPipeline:
    def __init__(
        self,
        projector: Projector,
        stores: Stores,
        log_: EventLog,
        codec: AvroCodec | None = None,
        *,
        dead_letters: bool = True,
        emit: bool = True,
    ) -> None:
        """``dead_letters=False`` (replay) skips poison records without sending them
        again: they reached the dead-letter topic the first time round. ``emit=False``
        (replay) likewise keeps the events a projector derives off the log: the first
        run appended them, and the same log derives the same events."""
        self.dead_letters = dead_letters
        self.emit = emit
        self.projector = projector
        self.stores = stores
        self.log = log_
        self.codec = codec or default_codec()
        self.publisher = Publisher(log_, self.codec)
        self.name = projector.name

    def decode(self, records: Sequence[LogRecord]) -> Decoded:
        raw = getattr(self.projector, "raw_topics", ())
        if raw and any(r.topic in raw for r in records):
            return self._decode_mixed(records, raw)
        good: list[Envelope] = []
        bad: list[DeadLetter] = []
        new = tuple.__new__  # an Envelope without the NamedTuple's Python-level __new__
        check = self.projector.check
        for r, item in zip(
            records, self.codec.decode_many([r.value for r in records]), strict=True
        ):
            if isinstance(item, CodecError):
                bad.append(DeadLetter(r, "decode", f"{type(item).__name__}: {item}"))
                continue
            event_type, payload = item
            env: Envelope = new(
                Envelope,
                (
                    r.topic,
                    r.partition,
                    r.offset,
                    (r.key or b"").decode("utf-8", "replace"),
                    event_type,
                    payload,
                    r.headers,
                    r.timestamp_ms,
                ),
            )
            try:
                check(env)
            except RejectedEvent as exc:
                bad.append(DeadLetter(r, "rejected", str(exc)))
                continue
            except Exception as exc:  # a check that trips over odd data rejects it too
                bad.append(DeadLetter(r, "rejected", f"{type(exc).__name__}: {exc}"))
                continue
            good.append(env)
        return good, bad

    def _decode_mixed(self, records: Sequence[LogRecord], raw: Any) -> Decoded:
        """A projector's ``raw_topics`` reach it undecoded (payload ``{"value": bytes}``,
        event type ``"raw"``): the dead-letter topics hold records that failed to
        decode, and decoding them again would only make dead letters of dead letters."""
        good, bad = self.decode([r for r in records if r.topic not in raw])
        for r in records:
            if r.topic in raw:
                key = (r.key or b"").decode("utf-8", "replace")
                good.append(
                    Envelope(r.topic, r.partition, r.offset, key, "raw", {"value": r.value},
                             r.headers, r.timestamp_ms)
                )  # fmt: skip
        return good, bad

    async def process(
        self, records: Sequence[LogRecord], decoded: Decoded | None = None
    ) -> BatchResult:
        if not records:
            return BatchResult(0, 0, 0, {})
        if not tracing.enabled():
            return await self._process(records, decoded)
        with tracing.batch_span(self.name, records) as span:
            result = await self._process(records, decoded)
            span.set_attribute("mgw.applied", result.applied)
            return result

    async def _process(self, records: Sequence[LogRecord], decoded: Decoded | None) -> BatchResult:
        started = time.perf_counter()
        good, bad = decoded if decoded is not None else self.decode(records)
        # lowest and highest offset per partition in the batch
        first: dict[tuple[str, int], int] = {}
        last: dict[tuple[str, int], int] = {}
        for r in records:
            k, o = (r.topic, r.partition), r.offset
            if o > last.get(k, -1):
                last[k] = o
            if o < first.get(k, o + 1):
                first[k] = o

        next_offsets = {k: o + 1 for k, o in last.items()}
        async with self.stores.pg.connection() as conn, conn.transaction():
            # Sorted, so two owners of overlapping partitions lock in the same order.
            checkpoints = await self._lock_checkpoints(conn, sorted(last))
            # The usual case: every record lies past its checkpoint (nothing redelivered),
            # and the batch goes through without a filtering pass per record.
            all_fresh = all(first[k] > o for k, o in checkpoints.items())
            fresh = good if all_fresh else [
                e for e in good if e.offset > checkpoints[(e.topic, e.partition)]
            ]  # fmt: skip
            fresh_bad = bad if all_fresh else [
                d
                for d in bad
                if d.record.offset > checkpoints[(d.record.topic, d.record.partition)]
            ]  # fmt: skip
            applied = None
            emitted: list[Any] = []
            if fresh:
                applied, failed = await self._apply(conn, fresh, records)
                fresh_bad += failed
                if isinstance(applied, Output):
                    applied, emitted = applied.rows, applied.events
            if emitted and self.emit:
                await self.publisher.publish_many(emitted)
            if fresh_bad and self.dead_letters:
                await send_dead_letters(self.log, self.name, fresh_bad)
            await self._advance_checkpoints(conn, last, checkpoints)
            redelivered = (
                good
                if applied is None
                else []
                if all_fresh
                else [e for e in good if e.offset <= checkpoints[(e.topic, e.partition)]]
            )
            # Still holding the checkpoint locks: side stores are written in the same order
            # as the rows, so an owner that lost its partitions mid-batch can never overwrite
            # newer Redis/Qdrant state afterwards. Their writes are idempotent, so the redo
            # after a failed commit is harmless.
            await self.projector.sync_side_stores(self.stores, conn, applied, redelivered)
            await self._advance_watermarks(conn, next_offsets)
        if applied is not None and self.emit:
            await self._announce(applied)

        skipped = len(good) - len(fresh)
        RECORDS_APPLIED.labels(self.name).inc(len(fresh))
        if skipped:
            RECORDS_SKIPPED.labels(self.name).inc(skipped)
        BATCH_SIZE.labels(self.name).observe(len(records))
        BATCH_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        return BatchResult(len(fresh), skipped, len(fresh_bad), next_offsets)

    async def reapply(self, record: LogRecord) -> Reapplied:
        """Apply one dead-lettered record again, behind the checkpoint that has moved past
        it (``mgw dlq retry``). Exactly once: the transaction that applies it also claims
        its row in ``dead_letter_retries``, so a second retry finds the claim and applies
        nothing, and a failure rolls the claim back with the rows. The checkpoint row is
        locked first, as every batch does, so the retry and the live projector never
        write the same rows at once. Nothing is sent to a dead-letter topic: the record
        is one already."""
        where = (record.topic, record.partition)
        async with self.stores.pg.connection() as conn:
            try:
                async with conn.transaction():
                    checkpoint = (await self._lock_checkpoints(conn, [where]))[where]
                    if record.offset > checkpoint:
                        return Reapplied("not_reached")  # the projector will decide in order
                    cur = await conn.execute(
                        'INSERT INTO dead_letter_retries (projector, topic, partition, "offset")'
                        " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (self.name, record.topic, record.partition, record.offset),
                    )
                    if cur.rowcount == 0:
                        return Reapplied("already_applied")
                    good, bad = self.decode([record])
                    applied, emitted = None, []
                    if good:
                        applied, failed = await self._apply(conn, good, [record])
                        bad += failed
                    if bad:
                        raise _StillDead(bad[0].error)
                    if isinstance(applied, Output):
                        applied, emitted = applied.rows, applied.events
                    if emitted and self.emit:
                        await self.publisher.publish_many(emitted)
                    await self.projector.sync_side_stores(self.stores, conn, applied, [])
            except _StillDead as exc:
                return Reapplied("failed", str(exc))
        if self.emit:
            await self._announce(applied)
        RECORDS_APPLIED.labels(self.name).inc()
        return Reapplied("applied")

    async def _announce(self, applied: Any) -> None:
        """After the commit: tell connected devices what changed (core/fanout.py). Lost
        pushes are counted, never retried: devices catch up from their cursors."""
        announce = getattr(self.projector, "announce", None)
        if announce is None or self.stores.redis is None:
            return
        try:
            if not await fanout.anyone_online(self.stores.redis):
                return  # nobody to tell: building the pushes would be wasted work
            pushes = announce(applied)
            if pushes:
                sent = await fanout.publish(self.stores.redis, pushes)
                PUSHES_PUBLISHED.labels(self.name).inc(sent)
        except Exception as exc:  # the batch is committed: a lost push must not redo it
            PUSHES_FAILED.labels(self.name).inc()
            log.warning(
                "%s: pushes to devices lost (%r); they catch up from cursors", self.name, exc
            )

    async def _apply(
        self,
        conn: AsyncConnection[Any],
        batch: list[Envelope],
        records: Sequence[LogRecord],
    ) -> tuple[Any, list[DeadLetter]]:
        try:
            async with conn.transaction():  # savepoint: a failing batch leaves no trace
                return await self.projector.apply(conn, batch), []
        except Exception as exc:
            if is_transient(exc):
                raise
            log.warning(
                "%s: batch of %d failed (%s); isolating the poison record",
                self.name,
                len(batch),
                exc,
            )
        letters: list[DeadLetter] = []
        by_offset = {(r.topic, r.partition, r.offset): r for r in records}
        applied: list[Any] = []
        for env in batch:  # one savepoint each, so one bad record cannot sink the batch
            try:
                async with conn.transaction():
                    applied.append(await self.projector.apply(conn, [env]))
            except Exception as exc:
                if is_transient(exc):
                    raise
                rec = by_offset[(env.topic, env.partition, env.offset)]
                letters.append(DeadLetter(rec, "apply", f"{type(exc).__name__}: {exc}"))
        return _merge(applied), letters

    async def _lock_checkpoints(
        self, conn: AsyncConnection[Any], parts: list[tuple[str, int]]
    ) -> dict[tuple[str, int], int]:
        topics = [t for t, _ in parts]
        partitions = [p for _, p in parts]
        await conn.execute(
            'INSERT INTO projection_checkpoints (projector, topic, partition, "offset")'
            " SELECT %s, t, p, -1 FROM unnest(%s::text[], %s::int[]) AS u(t, p)"
            " ON CONFLICT DO NOTHING",
            (self.name, topics, partitions),
        )
        # FOR UPDATE: two workers that briefly share a partition (a rebalance) serialize here.
        cur = await conn.execute(
            'SELECT topic, partition, "offset" FROM projection_checkpoints'
            " WHERE projector = %s AND (topic, partition) IN"
            " (SELECT * FROM unnest(%s::text[], %s::int[])) ORDER BY topic, partition FOR UPDATE",
            (self.name, topics, partitions),
        )
        return {(t, p): o for t, p, o in await cur.fetchall()}

    async def _advance_checkpoints(
        self,
        conn: AsyncConnection[Any],
        last: dict[tuple[str, int], int],
        checkpoints: dict[tuple[str, int], int],
    ) -> None:
        moved = [(k, o) for k, o in last.items() if o > checkpoints[k]]
        if not moved:
            return
        await conn.execute(
            'UPDATE projection_checkpoints c SET "offset" = u.o'
            " FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(t, p, o)"
            " WHERE c.projector = %s AND c.topic = u.t AND c.partition = u.p",
            ([k[0] for k, _ in moved], [k[1] for k, _ in moved], [o for _, o in moved], self.name),
        )

    async def _advance_watermarks(
        self, conn: AsyncConnection[Any], next_offsets: dict[tuple[str, int], int]
    ) -> None:
        items = list(next_offsets.items())
        await conn.execute(
            "INSERT INTO projection_watermarks (projector, topic, partition, next_offset)"
            " SELECT %s, t, p, o FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(t, p, o)"
            " ON CONFLICT (projector, topic, partition) DO UPDATE"
            " SET next_offset = GREATEST(projection_watermarks.next_offset,"
            " EXCLUDED.next_offset), updated_at = now()",
            (
                self.name,
                [k[0] for k, _ in items],
                [k[1] for k, _ in items],
                [o for _, o in items],
            ),
        )


def _merge(parts: list[Any]) -> Any:
    """Join what per-record applies returned (lists of rows or Outputs, or None)."""
    if parts and all(isinstance(p, Output) for p in parts):
        merged = _merge([p.rows for p in parts])
        return Output(merged, [e for p in parts for e in p.events])
    rows: list[Any] = []
    for p in parts:
        if p is None:
            return None  # unknown shape: let the projector read everything back
        rows.extend(p)
    return rows


#: between attempts at one batch: 0.2 s doubling up to 10 s, with full jitter
BACKOFF = Backoff(first=0.2, cap=10.0)


async def apply_until_done(
    pipeline: Callable[[], Awaitable[ProjectionPipeline]],
    records: Sequence[LogRecord],
    name: str,
    *,
    give_up_after: int | None = None,
    decoded: Decoded | None = None,
) -> None:
    """Apply a batch, retrying until it lands: a runtime never drops a batch. The
    checkpoint makes a partly applied retry harmless, and poison records never get here
    (the pipeline dead-letters them). ``decoded``: the batch already decoded (decoding
    is pure, so every attempt may reuse it).

    Transient failures (the database away) are retried for as long as it takes, logged
    when they start and when they end. A failure that is not transient is logged with
    its traceback, then quietly retried; ``give_up_after`` failures in a row of that kind
    raise it instead. It is None by default because under Faust leaving with an
    exception would ack the batch (``take_events`` acks in a ``finally``): a runtime
    may set it only where raising leaves the batch uncommitted."""
    retry = Retry(f"{name}: batch", log, backoff=BACKOFF, give_up_after=give_up_after)

    async def once() -> None:
        p = await pipeline()
        retry.postgres = getattr(p.stores.pg, "conninfo", None)
        await p.process(records, decoded)

    await retry.call(once)


async def load_watermarks(stores: Stores, projector: str) -> dict[tuple[str, int], int]:
    async with stores.pg.connection() as conn:
        cur = await conn.execute(
            "SELECT topic, partition, next_offset FROM projection_watermarks WHERE projector = %s",
            (projector,),
        )
        return {(t, p): o for t, p, o in await cur.fetchall()}
