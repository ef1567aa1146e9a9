"""`mgw backup` and `mgw restore`: the log to Avro Object Container Files and back.

Only the log is backed up. Projections are derived from it (drop them, replay the log,
get the same answers), so a restore loads the log and replays every projector; copying
them too would only add a second truth that can disagree with the first.

**Consistent while the system runs.** The end offset of every topic-partition is read
first, then each partition is copied exactly up to it: a backup is a prefix of every
partition, whatever is appended meanwhile. A partition is only ever appended to, so the
prefix cannot change under the copy.

**Incremental.** ``--since`` an earlier manifest starts each partition at that manifest's
end offsets; the new manifest names its parent (path and sha256), and a restore walks
the chain back to the full backup (mgw/backup_manifest.py).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
from fastavro.write import Writer
from tqdm import tqdm

from core.events import pack_headers, unpack_headers
from core.ids import new_id
from core.settings import Settings
from core.topics import ALL_TOPICS, TopicSpec
from mgw.backup_manifest import (
    MANIFEST,
    RECORD_SCHEMA,
    BackupError,
    FileEntry,
    Manifest,
    TopicPartition,
    check_coverage,
    load_chain,
    segment_name,
    sha256_of,
    since,
)
from streams.log import EventLog, LogError, OutgoingRecord

#: (offset, key, value, headers, timestamp in microseconds): one record between the log
#: and the container files
Row = tuple[int, bytes | None, bytes, tuple[tuple[str, bytes], ...], int]
#: records per container file before the next one starts: a damaged file costs one
#: segment, and a restore can resume at a segment boundary
SEGMENT_RECORDS = 1_000_000
CHUNK = 10_000
CODECS = ("deflate", "snappy", "null")


@dataclass
class Summary:
    records: int = 0
    bytes: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        s = max(self.seconds, 1e-9)
        return {
            "records": self.records,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "records_per_s": round(self.records / s),
            "mb_per_s": round(self.bytes / s / 1e6, 2),
        }


# -- backup ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def open_log_only(settings: Settings) -> AsyncIterator[EventLog]:
    """The log and nothing else: a backup needs no Redis, vectors or projections.

    The embedded PostgreSQL of a running `mgw up` on the same data dir is attached to,
    not started again: pgserver finds its postmaster and adds this process to the
    server's handle list, and stopping here stops the server only if no other process
    (mgw up) holds it."""
    from mgw import embedded
    from mgw.platform import open_log

    started: list[Any] = []
    try:
        db = settings.database_url or ""
        if not settings.kafka_bootstrap_servers and not db:
            if not (settings.data_dir / "postgres" / "PG_VERSION").exists():
                raise BackupError(
                    f"no embedded database under {settings.data_dir}: pass the --data-dir "
                    "`mgw up` uses, or set DATABASE_URL"
                )
            pg = embedded.start_postgres(settings.data_dir)
            started.append(pg)
            db = pg.uri
        log = await open_log(settings, db, {})
        try:
            yield log
        finally:
            await log.close()
    finally:
        for svc in reversed(started):
            svc.stop()


async def known_topics(log: EventLog) -> list[TopicSpec]:
    specs = {t.name: t for t in ALL_TOPICS}
    listing = getattr(log, "topic_specs", None)  # the embedded log knows every topic it holds
    if listing is not None:
        specs.update({t.name: t for t in await listing()})
    return [specs[n] for n in sorted(specs)]


async def end_offsets(log: EventLog, specs: list[TopicSpec]) -> dict[TopicPartition, int]:
    ends: dict[TopicPartition, int] = {}
    for s in specs:
        for p, o in (await log.end_offsets(s.name)).items():
            ends[(s.name, p)] = o
    return ends


class _Segments:
    """Writes one topic-partition's records into container files of at most
    ``segment_records`` each, named by the offsets they hold."""

    def __init__(
        self, out: Path, topic: str, partition: int, codec: str, segment_records: int
    ) -> None:
        self.out, self.topic, self.partition = out, topic, partition
        self.codec, self.limit = codec, segment_records
        self.files: list[FileEntry] = []
        self._fh: Any = None
        self._writer: Writer | None = None
        self._first = self._next = self._count = 0

    def add(self, rows: list[Row]) -> None:
        for off, key, value, headers, ts_us in rows:
            if self._writer is None:
                self._open(off)
            assert self._writer is not None
            self._writer.write(
                {
                    "offset": off,
                    "timestamp_us": ts_us,
                    "key": key,
                    "value": value,
                    "headers": [{"key": k, "value": v} for k, v in headers],
                }
            )
            self._next, self._count = off + 1, self._count + 1
            if self._count >= self.limit:
                self.close()

    def _open(self, first: int) -> None:
        self._first, self._count = first, 0
        self._fh = (self.out / f".{self.topic}-{self.partition}.partial").open("wb")
        self._writer = Writer(
            self._fh,
            fastavro.parse_schema(RECORD_SCHEMA),
            codec=self.codec,
            metadata={"mgw.topic": self.topic, "mgw.partition": str(self.partition)},
        )

    def close(self) -> None:
        if self._writer is None:
            return
        self._writer.flush()
        self._fh.close()
        name = segment_name(self.topic, self.partition, self._first, self._next)
        path = self.out / name
        Path(self._fh.name).rename(path)
        self.files.append(
            FileEntry(
                self.topic,
                self.partition,
                self._first,
                self._next,
                self._count,
                name,
                path.stat().st_size,
                sha256_of(path),
            )
        )
        self._writer = None


async def copy_partition(
    log: EventLog, topic: str, partition: int, start: int, end: int, on_rows: Callable[..., None]
) -> None:
    """Records [start, end) of one partition, in order, ``CHUNK`` at a time."""
    copy_out = getattr(log, "copy_out", None)
    if copy_out is not None:  # the embedded log: stored bytes and microseconds, one COPY

        def raw(rows: list[tuple[int, bytes | None, bytes, bytes, int]]) -> None:
            on_rows([(o, k, v, unpack_headers(h), ts) for o, k, v, h, ts in rows])

        await copy_out(topic, partition, start, end, raw, CHUNK)
        return
    at = start
    while at < end:  # Kafka: offsets may skip (transaction markers), so stop at the end
        got = [r for r in await log.read(topic, partition, at, CHUNK) if r.offset < end]
        if not got:
            return
        on_rows([(r.offset, r.key, r.value, tuple(r.headers), r.timestamp_ms * 1000) for r in got])
        at = got[-1].offset + 1


async def run_backup(
    settings: Settings, out: Path, *, as_json: bool = False, **options: Any
) -> int:
    """`mgw backup`: ``backup`` with its ``options``, reported on stdout."""
    try:
        summary, manifest = await backup(settings, out, **options)
    except (BackupError, LogError) as exc:
        print(f"backup refused: {exc}", file=sys.stderr)
        return 1
    report = {**summary.as_dict(), "files": len(manifest.files), "manifest": str(out / MANIFEST)}
    report["parent"] = manifest.parent["backup_id"] if manifest.parent else None
    if as_json:
        print(json.dumps(report))
    else:
        kind = "incremental" if manifest.parent else "full"
        print(
            f"{kind} backup {manifest.backup_id}: {summary.records:,} records in "
            f"{len(manifest.files)} files, {summary.bytes / 1e6:,.1f} MB, {summary.seconds:.1f}s "
            f"({report['records_per_s']:,} records/s) -> {out / MANIFEST}"
        )
    return 0


def _prepare_out(
    out: Path, since_manifest: Path | None
) -> tuple[dict[str, str] | None, dict[TopicPartition, int]]:
    """Create ``out``; with ``--since``, the parent reference and where each partition starts."""
    out.mkdir(parents=True, exist_ok=True)
    if since_manifest is None:
        return None, {}
    path = since_manifest / MANIFEST if since_manifest.is_dir() else since_manifest
    if not path.is_file():
        raise BackupError(f"--since {since_manifest}: no manifest there")
    return since(Manifest.from_json(path.read_text(), str(path)), path, out)


async def backup(
    settings: Settings,
    out: Path,
    *,
    since_manifest: Path | None = None,
    codec: str = "deflate",
    segment_records: int = SEGMENT_RECORDS,
    progress: bool = True,
) -> tuple[Summary, Manifest]:
    if codec not in CODECS:
        raise BackupError(f"codec must be one of {', '.join(CODECS)}")
    if (out / MANIFEST).exists():
        raise BackupError(f"{out} already holds a backup; give each backup its own directory")
    parent_ref, starts = _prepare_out(out, since_manifest)
    started = time.perf_counter()
    async with open_log_only(settings) as log:
        specs = await known_topics(log)
        # The consistency point: decided before a single record is copied.
        ends = await end_offsets(log, specs)
        for tp, start in starts.items():
            if ends.get(tp, 0) < start:
                raise BackupError(
                    f"{tp[0]}[{tp[1]}] ends at {ends.get(tp, 0)}, before the parent backup's "
                    f"{start}: this is not the log the parent was taken from"
                )
        manifest = Manifest(
            backup_id=new_id(),
            created_at=datetime.now(UTC).isoformat(),
            backend=log.backend,
            codec=codec,
            topics={s.name: (s.partitions, s.retention_ms) for s in specs},
            start_offsets={tp: starts.get(tp, 0) for tp in ends},
            end_offsets=ends,
            parent=parent_ref,
        )
        total = sum(e - starts.get(tp, 0) for tp, e in ends.items())
        with tqdm(total=total, desc="backup", unit="rec", disable=not progress) as bar:
            for (topic, p), end in sorted(ends.items()):
                start = starts.get((topic, p), 0)
                if end <= start:
                    continue
                seg = _Segments(out, topic, p, codec, segment_records)

                def write(rows: list[Row], seg: _Segments = seg) -> None:
                    seg.add(rows)
                    bar.update(len(rows))

                await copy_partition(log, topic, p, start, end, write)
                seg.close()
                manifest.files.extend(seg.files)
    # Written last, and renamed into place: a directory with a manifest is a whole backup.
    tmp = out / f".{MANIFEST}.partial"
    tmp.write_text(manifest.to_json())
    tmp.rename(out / MANIFEST)
    sums = [f"{f.sha256}  {f.file}" for f in manifest.files]
    (out / "SHA256SUMS").write_text("".join(f"{line}\n" for line in sums))
    summary = Summary(manifest.records, manifest.bytes, time.perf_counter() - started)
    return summary, manifest


# -- restore ---------------------------------------------------------------------------


def verify_files(chain: list[tuple[Path, Manifest]], progress: bool = True) -> int:
    """Every file of the chain against its manifest's sha256; the bytes checked."""
    total = sum(m.bytes for _, m in chain)
    with tqdm(total=total, desc="verify", unit="B", unit_scale=True, disable=not progress) as bar:
        for where, m in chain:
            check_coverage(m, where, dense=m.backend == "embedded")
            for f in m.files:
                path = where / f.file
                if not path.is_file():
                    raise BackupError(f"{path} is missing (listed in {where / MANIFEST})")
                if sha256_of(path) != f.sha256:
                    raise BackupError(
                        f"{path} does not match the sha256 in {where / MANIFEST}: the file was "
                        "changed or damaged after the backup"
                    )
                bar.update(f.bytes)
    return total


def read_rows(path: Path, skip_below: int) -> Iterator[list[Row]]:
    with path.open("rb") as fh:
        rows: list[Row] = []
        for rec in fastavro.reader(fh):
            r: Any = rec
            if r["offset"] < skip_below:
                continue
            headers = tuple((h["key"], h["value"]) for h in r["headers"])
            rows.append((r["offset"], r["key"], r["value"], headers, r["timestamp_us"]))
            if len(rows) >= CHUNK:
                yield rows
                rows = []
        if rows:
            yield rows


async def load_rows(log: EventLog, topic: str, partition: int, rows: list[Row]) -> None:
    copy_in = getattr(log, "copy_in", None)
    if copy_in is not None:  # the embedded log: one COPY at the stored offsets and times
        packed = [(o, k, v, pack_headers(h), ts) for o, k, v, h, ts in rows]
        await copy_in(topic, partition, packed)
        return
    # Kafka: appending in order to a fresh topic gives the same offsets, and the key
    # the same partition; checked, not assumed (the broker stamps its own timestamps).
    if any(k is None for _, k, _, _, _ in rows):
        raise BackupError(
            f"{topic}[{partition}] has records without a key: Kafka cannot place them"
        )
    got = await log.append_batch(topic, [OutgoingRecord(k or b"", v, h) for _, k, v, h, _ in rows])
    for (off, *_), pos in zip(rows, got, strict=True):
        if (pos.partition, pos.offset) != (partition, off):
            raise BackupError(
                f"{topic}[{partition}] offset {off} landed at {pos.token()}: restore into "
                "fresh topics"
            )


async def run_restore(
    settings: Settings,
    src: Path,
    *,
    allow_non_empty: bool = False,
    rebuild: bool = True,
    progress: bool = True,
    as_json: bool = False,
) -> int:
    try:
        report = await restore(
            settings, src, allow_non_empty=allow_non_empty, rebuild=rebuild, progress=progress
        )
    except (BackupError, LogError) as exc:
        print(f"restore refused: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(report))
        return 0
    print(
        f"restored {report['records']:,} records ({report['bytes'] / 1e6:,.1f} MB) from "
        f"{report['backups']} backup(s) in {report['seconds']:.1f}s "
        f"({report['records_per_s']:,} records/s)"
    )
    if rebuild:
        print(
            f"rebuilt {len(report['projectors'])} projections from the log in "
            f"{report['rebuild_seconds']:.1f}s"
        )
    else:
        print("projections are empty: `mgw up` (or `mgw worker`) builds them from the log")
    return 0


async def restore(
    settings: Settings, src: Path, *, allow_non_empty: bool = False, rebuild: bool = True,
    progress: bool = True,
) -> dict[str, Any]:  # fmt: skip
    """Verify the chain ending in ``src``, load it into the (empty) log of ``settings``,
    then replay every projector unless ``rebuild`` is off."""
    from mgw.platform import open_platform

    chain = load_chain(src)
    verify_files(chain, progress)
    final = chain[-1][1]
    specs = {n: TopicSpec(n, parts, ret) for _, m in chain for n, (parts, ret) in m.topics.items()}
    async with open_platform(settings) as pf:
        log = pf.log
        await log.ensure_topics(list(specs.values()))
        have = await end_offsets(log, list(specs.values()))
        held = {tp: o for tp, o in have.items() if o > 0}
        if held and not allow_non_empty:
            raise BackupError(
                f"the target log is not empty ({sum(held.values()):,} records, e.g. "
                f"{min(held)[0]}[{min(held)[1]}]): restore into an empty data dir or database, "
                "or pass --allow-non-empty to continue an interrupted restore or add a newer "
                "incremental to one"
            )
        for tp, o in held.items():
            if o > final.end_offsets.get(tp, 0):
                raise BackupError(
                    f"the target's {tp[0]}[{tp[1]}] ends at {o}, past the backup's "
                    f"{final.end_offsets.get(tp, 0)}: it is not a prefix of this backup"
                )
        started = time.perf_counter()
        summary = Summary()
        total = sum(max(0, e - have.get(tp, 0)) for tp, e in final.end_offsets.items())
        with tqdm(total=total, desc="restore", unit="rec", disable=not progress) as bar:
            for where, m in chain:
                for f in sorted(m.files, key=lambda f: (f.topic, f.partition, f.first_offset)):
                    skip = have.get((f.topic, f.partition), 0)
                    if f.end_offset <= skip:
                        continue
                    for rows in read_rows(where / f.file, skip):
                        await load_rows(log, f.topic, f.partition, rows)
                        summary.records += len(rows)
                        bar.update(len(rows))
                    summary.bytes += f.bytes
        summary.seconds = time.perf_counter() - started
        after = await end_offsets(log, list(specs.values()))
        wrong = {tp: (after.get(tp, 0), e) for tp, e in final.end_offsets.items()}
        wrong = {tp: v for tp, v in wrong.items() if v[0] < v[1]}
        if wrong:
            raise BackupError(f"after the restore these partitions end early (have, want): {wrong}")
        report: dict[str, Any] = {**summary.as_dict(), "backups": len(chain)}
        report["end_offsets_total"] = sum(final.end_offsets.values())
        if rebuild:
            t0 = time.perf_counter()
            report["projectors"] = await rebuild_projections(pf, progress)
            report["rebuild_seconds"] = round(time.perf_counter() - t0, 3)
    return report


async def rebuild_projections(pf: Any, progress: bool) -> dict[str, int]:
    """Every projector to the end of the log, as `mgw replay` does one: no dead letters
    and no derived events (those are in the restored log already)."""
    from projections.registry import PROJECTORS
    from streams.processing import ProjectionPipeline
    from streams.runner import ProjectorLoop

    applied: dict[str, int] = {}
    for projector in PROJECTORS:
        await projector.prepare(pf.stores)
        total = 0
        for topic in projector.topics:
            total += sum((await pf.log.end_offsets(topic)).values())
        loop = ProjectorLoop(
            ProjectionPipeline(projector, pf.stores, pf.log, dead_letters=False, emit=False),
            pf.log,
            batch_size=pf.settings.batch_size,
            linger_ms=0,
        )
        desc = f"rebuild {projector.name}"
        with tqdm(total=total, desc=desc, unit="rec", disable=not progress) as bar:
            applied[projector.name] = await loop.catch_up(
                lambda r: bar.update(r.applied + r.skipped + r.dead_letters)
            )
    return applied
