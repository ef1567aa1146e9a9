"""The embedded services a benchmark runs the app on: a fresh PostgreSQL (migrated) and
Redis in a temporary directory, gone when the benchmark ends."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx

from core.db import migrate
from core.settings import Settings
from mgw import embedded


@contextmanager
def embedded_settings(prefix: str, **overrides: Any) -> Iterator[Settings]:
    """Settings for the app on fresh embedded services: batches without linger, and no
    vectors step or embedding model (what the benchmarks measure does not use them);
    ``overrides`` replace or add fields."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        root = Path(tmp)
        pg = embedded.start_postgres(root)
        rd = embedded.start_redis(root)
        try:
            migrate(pg.uri)
            fields: dict[str, Any] = {
                "data_dir": root / "data",
                "database_url": pg.uri,
                "redis_url": f"unix://{rd.server.socket_file}",
                "batch_linger_ms": 0,
                "search_indexer": False,
                "embeddings": "none",
                **overrides,
            }
            yield Settings(**fields)
        finally:
            rd.stop()
            pg.stop()


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    """The real app in this process, started (its lifespan: projectors, background steps),
    and an HTTP client that reaches it through ASGI: (its AppContext, the client)."""
    from mgw.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=60
        ) as http:
            yield app.state.mgw, http
