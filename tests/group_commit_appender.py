"""A process that appends to the embedded log from many tasks at once and prints each
acknowledged append, for tests/test_log_group_commit.py to kill with SIGKILL.

    python -m tests.group_commit_appender DB_URI TOPIC TASKS

Task t appends records whose value is ``t:seq`` for seq = 0, 1, 2, ... one after the
other, and prints ``ACK t seq partition offset`` (flushed) once the append returned.
"""

from __future__ import annotations

import asyncio
import sys

from core.topics import TopicSpec
from streams.embedded import EmbeddedLog
from streams.log import OutgoingRecord


async def main(db_uri: str, topic: str, tasks: int) -> None:
    log = await EmbeddedLog(db_uri).open()
    await log.ensure_topics([TopicSpec(topic, 2)])

    async def task(t: int) -> None:
        seq = 0
        while True:
            pos = await log.append(topic, OutgoingRecord(f"k{t}".encode(), f"{t}:{seq}".encode()))
            sys.stdout.write(f"ACK {t} {seq} {pos.partition} {pos.offset}\n")
            sys.stdout.flush()
            seq += 1

    await asyncio.gather(*(task(t) for t in range(tasks)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
