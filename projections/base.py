"""What a projector is, as both runtimes see it.

A projector is a named read model. It declares the topics it reads, checks each
decoded event (a rejected event goes to the dead-letter topic), writes its
PostgreSQL rows for a batch inside the transaction the pipeline opens (the
pipeline adds the checkpoint to that same transaction), and then brings its
Redis/Qdrant side stores in line with the rows it just wrote. Side-store writes
are derived from PostgreSQL state, so repeating them is harmless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.events import Event, Headers, header, occurred_at_of


class RejectedEvent(Exception):
    """The projector refuses this event: it is sent to the dead-letter topic."""


class Envelope(NamedTuple):
    """A decoded record (a NamedTuple: built per record, so it must be cheap)."""

    topic: str
    partition: int
    offset: int
    key: str
    event_type: str
    payload: dict[str, Any]
    headers: Headers
    timestamp_ms: int = 0  # when the log stored the record

    # Parsed on demand: most projectors never look, and parsing costs on the hot path.
    @property
    def event_id(self) -> str | None:
        return header(self.headers, "event_id")

    @property
    def occurred_at(self) -> datetime | None:
        return occurred_at_of(self.headers)

    @property
    def happened_at(self) -> datetime:
        """occurred_at, or when the log stored the record if a producer left it out:
        either way a replay computes the same value."""
        return self.occurred_at or datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)


class Output(NamedTuple):
    """What a projector that derives events returns from ``apply``: the rows for
    ``sync_side_stores`` and the events to append. The pipeline appends them before the
    batch commits, so a crash can repeat an emission but never lose one; their ids are
    derived from the source record, so a repeat is recognisable and harmless."""

    rows: Any
    events: list[Event]


@dataclass(slots=True)
class Stores:
    """Connections a projector may use; any may be absent in a narrow test."""

    pg: AsyncConnectionPool
    redis: Any = None  # redis.asyncio.Redis
    qdrant: Any = None  # qdrant_client.AsyncQdrantClient
    #: the search read model's vector store, embedder and settings (search_index.SearchSetup)
    search: Any = None
    #: appends events (streams.publisher.Publisher), for background steps that append what
    #: they decide (expired sessions)
    publisher: Any = None
    #: the process settings (core.settings.Settings), for background steps' knobs
    settings: Any = None
    #: sends mail (core.mail.Mailer), for background steps that mail (the daily digest):
    #: `mgw up` hands in its local sink when no SMTP host is set
    mailer: Any = None


class Projector(Protocol):
    # read-only members: a projector declares them as class attributes of any tuple length
    @property
    def name(self) -> str: ...
    @property
    def topics(self) -> tuple[str, ...]: ...
    @property
    def tables(self) -> tuple[str, ...]:
        """Tables holding this read model (cleared by replay)."""

    @property
    def side_stores(self) -> tuple[str, ...]:
        """Side stores it writes besides PostgreSQL: "redis", "vectors"."""

    def check(self, event: Envelope) -> None:
        """Raise RejectedEvent when the event cannot be applied. Pure."""

    async def apply(self, conn: AsyncConnection[Any], batch: Sequence[Envelope]) -> Any:
        """Write the batch's rows; runs inside the pipeline's transaction. May return the
        rows it wrote, which the pipeline hands to ``sync_side_stores``."""

    async def sync_side_stores(
        self,
        stores: Stores,
        conn: AsyncConnection[Any],
        applied: Any,
        redelivered: Sequence[Envelope],
    ) -> None:
        """Make Redis/Qdrant agree with PostgreSQL: for what ``apply`` returned, and for
        the keys of ``redelivered`` events (applied before, maybe not yet synced; read
        them back through ``conn``, the batch's transaction). Idempotent."""

    async def reset_side_stores(self, stores: Stores) -> None:
        """Drop this projection's Redis/Qdrant state (replay)."""

    async def prepare(self, stores: Stores) -> None:
        """Create side-store structures (collections) if missing."""

    # Optional: ``announce(self, applied) -> Sequence[core.fanout.Push]``. A projector
    # whose changes devices should hear about at once turns what ``apply`` returned into
    # pushes; the pipeline publishes them after the commit (not on replay). Pure and
    # cheap: it runs once per batch on the hot path.


async def fetch_rows(
    conn: AsyncConnection[Any], sql: str, params: Any = None
) -> list[tuple[Any, ...]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


class PostgresOnly:
    """For a projector with no Redis or Qdrant state: the side-store hooks do nothing."""

    side_stores: tuple[str, ...] = ()

    async def sync_side_stores(
        self,
        stores: Stores,
        conn: AsyncConnection[Any],
        applied: Any,
        redelivered: Sequence[Envelope],
    ) -> None:
        return None

    async def reset_side_stores(self, stores: Stores) -> None:
        return None

    async def prepare(self, stores: Stores) -> None:
        return None
