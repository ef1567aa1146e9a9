"""The manifest of a log backup, and the chain an incremental backup forms: values only.

A backup directory holds one Avro Object Container File per topic-partition segment and
``manifest.json``. The manifest says which offsets each file holds, its record count and
sha256, and the end offsets the whole backup is consistent at. An incremental backup
starts where its parent's end offsets stop and names the parent (path and sha256 of its
manifest), so a chain full -> incr -> incr restores to the newest one's end offsets.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

FORMAT = "mgw-log-backup"
VERSION = 1
MANIFEST = "manifest.json"

#: one log record in the container files; the topic and partition are file metadata
RECORD_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "LogRecord",
    "namespace": "mgw.backup",
    "fields": [
        {"name": "offset", "type": "long"},
        # Microseconds, not Avro's timestamp-micros logical type: readers get the plain
        # number back (no datetime per record), and the embedded log stores micros.
        {"name": "timestamp_us", "type": "long", "doc": "when the log stored it, UTC"},
        {"name": "key", "type": ["null", "bytes"]},
        {"name": "value", "type": "bytes", "doc": "the event, Avro single-object encoded"},
        {
            "name": "headers",
            # an array, not a map: header order and repeated names survive
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "Header",
                    "fields": [
                        {"name": "key", "type": "string"},
                        {"name": "value", "type": "bytes"},
                    ],
                },
            },
        },
    ],
}


class BackupError(Exception):
    """A backup or restore that must not go on; the message names what and why."""


TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FileEntry:
    topic: str
    partition: int
    first_offset: int
    #: one past the last record's offset
    end_offset: int
    records: int
    file: str
    bytes: int
    sha256: str


@dataclass
class Manifest:
    backup_id: str
    created_at: str
    backend: str
    codec: str
    #: topic -> (partitions, retention_ms), so a restore creates topics the code no longer
    #: names
    topics: dict[str, tuple[int, int]]
    #: per topic-partition, where this backup starts (the parent's end, 0 for a full one)
    start_offsets: dict[TopicPartition, int]
    #: per topic-partition, the end offsets the backup is consistent at (decided first)
    end_offsets: dict[TopicPartition, int]
    files: list[FileEntry] = field(default_factory=list)
    #: the earlier manifest this one continues: {"path", "backup_id", "sha256"}
    parent: dict[str, str] | None = None

    @property
    def records(self) -> int:
        return sum(f.records for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": FORMAT,
                "version": VERSION,
                "backup_id": self.backup_id,
                "created_at": self.created_at,
                "backend": self.backend,
                "codec": self.codec,
                "parent": self.parent,
                "record_schema": RECORD_SCHEMA,
                "records": self.records,
                "bytes": self.bytes,
                "topics": {
                    t: {"partitions": n, "retention_ms": r}
                    for t, (n, r) in sorted(self.topics.items())
                },
                "start_offsets": _nest(self.start_offsets),
                "end_offsets": _nest(self.end_offsets),
                "files": [asdict(f) for f in self.files],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str, where: str) -> Manifest:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BackupError(f"{where} is not JSON: {exc}") from None
        if doc.get("format") != FORMAT:
            raise BackupError(f"{where} is not a Media Gateway log backup manifest")
        if doc.get("version") != VERSION:
            raise BackupError(f"{where} has format version {doc.get('version')}, not {VERSION}")
        return cls(
            backup_id=doc["backup_id"],
            created_at=doc["created_at"],
            backend=doc["backend"],
            codec=doc["codec"],
            topics={
                t: (int(v["partitions"]), int(v["retention_ms"])) for t, v in doc["topics"].items()
            },
            start_offsets=_flat(doc["start_offsets"]),
            end_offsets=_flat(doc["end_offsets"]),
            files=[FileEntry(**f) for f in doc["files"]],
            parent=doc.get("parent"),
        )


def _nest(offsets: dict[TopicPartition, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (t, p), o in sorted(offsets.items()):
        out.setdefault(t, {})[str(p)] = o
    return out


def _flat(nested: dict[str, dict[str, int]]) -> dict[TopicPartition, int]:
    return {(t, int(p)): int(o) for t, parts in nested.items() for p, o in parts.items()}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def segment_name(topic: str, partition: int, first: int, end: int) -> str:
    return f"{topic}-{partition}-{first:012d}-{end:012d}.avro"


def since(
    parent: Manifest, parent_path: Path, out: Path
) -> tuple[dict[str, str], dict[TopicPartition, int]]:
    """The ``parent`` reference of a backup in ``out`` continuing ``parent``, and the offsets
    it starts at."""
    rel = os.path.relpath(parent_path.resolve(), out.resolve())
    ref = {
        "path": rel,
        "backup_id": parent.backup_id,
        "sha256": sha256_of(parent_path),
    }
    return ref, dict(parent.end_offsets)


def load_chain(directory: Path) -> list[tuple[Path, Manifest]]:
    """The manifests from the full backup to the one in ``directory``, oldest first, each
    parent's sha256 checked and each link continuing exactly where its parent ended."""
    chain: list[tuple[Path, Manifest]] = []
    path = directory / MANIFEST
    expected_sha: str | None = None
    seen: set[str] = set()
    while True:
        if not path.is_file():
            raise BackupError(f"manifest {path} is missing")
        if expected_sha is not None and sha256_of(path) != expected_sha:
            raise BackupError(
                f"manifest {path} does not match the sha256 its child recorded: it was "
                "changed or replaced after the incremental backup was taken"
            )
        m = Manifest.from_json(path.read_text(), str(path))
        if m.backup_id in seen:
            raise BackupError(f"manifest {path} makes the chain a loop")
        seen.add(m.backup_id)
        chain.append((path.parent, m))
        if m.parent is None:
            break
        expected_sha = m.parent["sha256"]
        path = (path.parent / m.parent["path"]).resolve()
    chain.reverse()
    for (_, parent), (where, child) in zip(chain, chain[1:], strict=False):
        if child.parent and child.parent["backup_id"] != parent.backup_id:
            raise BackupError(f"{where / MANIFEST} names parent {child.parent['backup_id']}")
        for tp, start in child.start_offsets.items():
            if start != parent.end_offsets.get(tp, 0):
                raise BackupError(
                    f"{where / MANIFEST} starts {tp[0]}[{tp[1]}] at {start}, but its parent "
                    f"ended at {parent.end_offsets.get(tp, 0)}"
                )
    return chain


def check_coverage(m: Manifest, where: Path, dense: bool) -> None:
    """Each topic-partition's files cover [start, end) without a gap or overlap (on a
    dense log every offset is a record)."""
    by_tp: dict[TopicPartition, list[FileEntry]] = {}
    for f in m.files:
        by_tp.setdefault((f.topic, f.partition), []).append(f)
    for tp, end in m.end_offsets.items():
        at = m.start_offsets.get(tp, 0)
        for f in sorted(by_tp.pop(tp, []), key=lambda f: f.first_offset):
            if f.first_offset < at or (dense and f.first_offset != at):
                raise BackupError(f"{where / f.file} starts at {f.first_offset}, expected {at}")
            if dense and f.records != f.end_offset - f.first_offset:
                raise BackupError(f"{where / f.file} lists {f.records} records for a dense range")
            at = f.end_offset
        if at > end or (dense and at != end):
            raise BackupError(f"{where / MANIFEST}: {tp[0]}[{tp[1]}] files end at {at}, not {end}")
    if by_tp:
        raise BackupError(f"{where / MANIFEST} lists files of unknown partitions {sorted(by_tp)}")
