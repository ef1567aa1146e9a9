"""The composition root: turn settings into a running log, stores and publisher.

Everything that opens a connection is opened here, once, and closed in reverse
order. Embedded services are started for whatever URL is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

from core.db import migrate, open_pool
from core.settings import Settings
from core.topics import ALL_TOPICS
from projections.base import Stores
from streams.log import EventLog
from streams.publisher import Publisher

log = logging.getLogger("mgw.platform")


@dataclass
class Platform:
    settings: Settings
    log: EventLog
    stores: Stores
    publisher: Publisher
    where: dict[str, str] = field(default_factory=dict)
    #: the settings with every service URL filled in (embedded ones included), for
    #: child processes that must reach the same servers
    resolved: Settings | None = None


def resolve_services(settings: Settings, started: list[Any]) -> tuple[str, str, dict[str, str]]:
    """Database and Redis URLs, starting embedded servers for missing ones."""
    from mgw import embedded

    where: dict[str, str] = {}
    db = settings.database_url
    if db is None:
        pg = embedded.start_postgres(settings.data_dir)
        started.append(pg)
        db = pg.uri
        where["postgres"] = f"embedded PostgreSQL 18 at {settings.data_dir / 'postgres'}"
    else:
        where["postgres"] = _redact(db)
    redis_url = settings.redis_url
    if redis_url is None:
        rd = embedded.start_redis(settings.data_dir)
        started.append(rd)
        redis_url = rd.url
        where["redis"] = f"embedded Redis 6.2 ({rd.url})"
    else:
        where["redis"] = _redact(redis_url)
    return db, redis_url, where


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}" if ":" in creds else url
    return url


async def open_qdrant(settings: Settings, where: dict[str, str]) -> Any:
    from qdrant_client import AsyncQdrantClient

    if settings.qdrant_url:
        where["qdrant"] = settings.qdrant_url
        return AsyncQdrantClient(url=settings.qdrant_url)
    from mgw.embedded import qdrant_path

    path = qdrant_path(settings.data_dir)
    where["qdrant"] = f"Qdrant local mode at {path}"
    return AsyncQdrantClient(path=str(path))


async def open_log(settings: Settings, db_url: str, where: dict[str, str]) -> EventLog:
    if settings.kafka_bootstrap_servers:
        from streams.kafka import KafkaLog

        klog = KafkaLog(settings.kafka_bootstrap_servers)
        await klog.open()
        await klog.ensure_topics(ALL_TOPICS)
        where["log"] = f"Kafka at {settings.kafka_bootstrap_servers}"
        return klog
    from streams.embedded import EmbeddedLog

    elog = EmbeddedLog(db_url)
    await elog.open()
    where["log"] = "embedded log in PostgreSQL"
    return elog


def vector_store(settings: Settings, stores: Stores, where: dict[str, str]) -> Any:
    """The search vectors' store for these settings (projections/search_vector_stores.py)."""
    from projections.search_vector_stores import EdgeVectorStore, PgVectorStore, QdrantVectorStore

    if settings.vector_store == "qdrant":
        if stores.qdrant is None:
            raise RuntimeError("MGW_VECTOR_STORE=qdrant needs Qdrant: set QDRANT_URL")
        return QdrantVectorStore(stores.qdrant)
    if settings.vector_store == "pgvector":
        where["vectors"] = "pgvector (search_vectors table)"
        return PgVectorStore(stores.pg)
    path = settings.data_dir / "vectors" / "content"
    where["vectors"] = f"Qdrant Edge in-process at {path}"
    return EdgeVectorStore(path)


def search_setup(
    settings: Settings, stores: Stores, where: dict[str, str], *, with_vectors: bool = True
) -> Any:
    """Without vectors (another process holds the embedded store) search answers from
    full text and trigram, flagged ``degraded``."""
    from projections.search_index import SearchSetup

    embedder = None
    if settings.embeddings == "minilm" and with_vectors:
        from core.embedding import shared_embedder

        embedder = shared_embedder
    return SearchSetup(
        vectors=vector_store(settings, stores, where) if with_vectors else None,
        embedder=embedder,
        cache_path=settings.embedding_cache or settings.data_dir / "embeddings" / "cache.sqlite",
        half_life_days=settings.freshness_half_life_days,
        background=settings.search_indexer,
    )


@contextlib.asynccontextmanager
async def open_platform(
    settings: Settings, *, with_vectors: bool = True, pool_size: int = 8
) -> AsyncIterator[Platform]:
    """``with_vectors``: open the search vector store here. The embedded one (Qdrant Edge)
    belongs to one process: the one that runs the search projector and answers searches."""
    started: list[Any] = []
    try:
        db_url, redis_url, where = resolve_services(settings, started)
        migrate(db_url)
        import redis.asyncio as aioredis

        pool = open_pool(db_url, max_size=pool_size)
        await pool.open(wait=True)
        redis = aioredis.from_url(redis_url)
        use_qdrant = with_vectors and settings.vector_store == "qdrant"
        qdrant = await open_qdrant(settings, where) if use_qdrant else None
        event_log = await open_log(settings, db_url, where)
        stores = Stores(
            pg=pool,
            redis=redis,
            qdrant=qdrant,
            publisher=Publisher(event_log),
            settings=settings,
        )
        stores.search = search_setup(settings, stores, where, with_vectors=with_vectors)
        resolved = replace(settings, database_url=db_url, redis_url=redis_url)
        platform = Platform(settings, event_log, stores, stores.publisher, where, resolved)
        try:
            yield platform
        finally:
            await event_log.close()
            if stores.search is not None and stores.search.vectors is not None:
                await stores.search.vectors.close()
            if qdrant is not None:
                await qdrant.close()
            await redis.aclose()
            await pool.close()
    finally:
        for svc in reversed(started):
            svc.stop()


def search_engine(settings: Settings, stores: Stores) -> Any:
    """The query side of the search read model, over the same vector store."""
    from projections.search_engine import SearchEngine

    setup = stores.search
    return SearchEngine(
        stores.pg, setup.vectors, setup.embedder, half_life_days=settings.freshness_half_life_days
    )


def start_background(
    projectors: Any, stores: Stores, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """The background steps of the projectors this process runs (the search projector's
    vectors): started beside them, so a worker fleet and `mgw up` run the same work."""
    tasks = []
    for p in projectors:
        make = getattr(p, "background", None)
        step = make(stores) if make is not None else None
        if step is not None:
            tasks.append(asyncio.create_task(step.run(stop), name=f"background-{p.name}"))
    return tasks


async def stop_background(tasks: list[asyncio.Task[None]], timeout: float = 10) -> None:
    for t in tasks:
        try:
            await asyncio.wait_for(t, timeout)
        except (TimeoutError, asyncio.CancelledError):
            t.cancel()
        except Exception:
            log.exception("background step %s failed", t.get_name())
