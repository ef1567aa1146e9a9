"""`mgw up`: the whole platform in one process."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import socket
import sys
from typing import Any

import uvicorn
from tqdm import tqdm

from api.context import AppContext
from core.gc_tuning import tune_for_batches
from core.settings import Settings
from core.topics import CATALOG
from mgw.app import create_app
from mgw.mailsink import mail_for_up

log = logging.getLogger("mgw.up")


async def load_demo_accounts(c: AppContext) -> int:
    """The demo's viewers as accounts (alice@demo.example ... with DEMO_USER_PASSWORD),
    so signing in as one shows the continue-watching the demo played for them."""
    from api.identity.accounts import registration
    from core.events import Event
    from mgw import demo

    password_hash = await asyncio.to_thread(c.identity.passwords.hash, demo.DEMO_USER_PASSWORD)
    accounts = [
        Event(
            "UserRegistered",
            user,
            {
                **registration(
                    user,
                    demo.demo_email(user),
                    user.removeprefix("demo-").title(),
                    password_hash=password_hash,
                    source="demo",
                    verified=True,
                ),
                "actor_id": "demo",
                "ip": None,
                "user_agent": None,
            },
            producer="demo",
        )
        for user in demo.DEMO_USERS
    ]
    await c.publisher.publish_many(accounts)
    return len(accounts)


async def load_demo(c: AppContext, base_url: str, *, progress: bool = True) -> int:
    """Publish the demo titles and playback once per log; returns events appended."""
    from mgw import demo

    ends = await c.log.end_offsets(CATALOG.name)
    events = list(demo.content_events())
    first_id = events[0].key
    if sum(ends.values()) >= len(events):
        log.info("demo titles already in the log; not loading them again")
        appended = await load_demo_feeds(c)  # unchanged feeds append nothing
        print(demo.example_requests(base_url, first_id), flush=True)
        return appended
    appended = 0
    with tqdm(total=len(events), desc="demo titles", unit="ev", disable=not progress) as bar:
        for i in range(0, len(events), 1000):
            chunk = events[i : i + 1000]
            await c.publisher.publish_many(chunk)
            appended += len(chunk)
            bar.update(len(chunk))
    plays = demo.playback_events([e.key for e in events])
    await c.publisher.publish_many(plays)
    appended += len(plays)
    appended += await load_demo_accounts(c)
    library = demo.library_events([e.key for e in events[:2000]])
    await c.publisher.publish_many(library)
    appended += len(library)
    ratings = list(demo.rating_plays())
    with tqdm(total=len(ratings), desc="demo plays", unit="ev", disable=not progress) as bar:
        for i in range(0, len(ratings), 5000):
            await c.publisher.publish_many(ratings[i : i + 5000])
            bar.update(len(ratings[i : i + 5000]))
    appended += len(ratings)
    log.info(
        "demo: appended %d titles, %d playback events for %d users and %d MovieLens plays",
        len(events),
        len(plays),
        len(demo.DEMO_USERS),
        len(ratings),
    )
    appended += await load_demo_feeds(c)
    print(demo.example_requests(base_url, first_id), flush=True)
    return appended


async def _caught_up(c: AppContext, names: tuple[str, ...], timeout: float = 300) -> None:
    from api.health import projector_lag

    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        lags = await projector_lag(c)
        if all(lags[n]["lag"] == 0 for n in names):
            return
        await asyncio.sleep(0.2)
    log.warning("demo feeds: %s still lagging; ingesting anyway", ", ".join(names))


async def load_demo_feeds(c: AppContext, *, progress: bool = True) -> int:
    """Generate the eight platform feeds (once per data dir) and ingest them, so the
    demo catalog has availability on every platform. The running projectors resolve
    them; `mgw ingest` works the same way from the command line."""
    from mgw.feedgen import generate
    from streams.feeds import ingest_files

    out = c.settings.data_dir / "demo-feeds"
    if not (out / "manifest.json").exists():
        await asyncio.to_thread(generate, out, scale=1, seed=7, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    appended = 0
    await _caught_up(c, ("resolution", "availability"))  # the diff reads their state
    for platform, name in manifest["feeds"].items():
        summary = await ingest_files(c.stores, c.publisher, platform, [out / name])
        appended += summary.appended
        if progress:
            log.info(
                "demo feed %s: %d records, %d events appended, %d unchanged, %d rejected",
                platform,
                summary.read,
                summary.appended,
                summary.unchanged,
                len(summary.rejected),
            )
    return appended


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def run_up(settings: Settings, *, demo: bool = False) -> int:
    base = f"http://{settings.host}:{settings.port}"
    if not _port_free(settings.host, settings.port):
        # before any service starts, so nothing has to be torn down again
        print(
            f"mgw up: {settings.host}:{settings.port} is already in use; stop the process "
            "holding it or pass --port (or MGW_PORT)",
            file=sys.stderr,
        )
        return 2
    tasks: list[asyncio.Task[Any]] = []
    where_mail: list[str] = []

    async def on_ready(c: AppContext) -> None:
        for part, where in c.where.items():
            log.info("%-8s %s", part, where)
        log.info(
            "%-8s %d projectors in-process (%s)",
            "runner",
            len(c.runner.projectors) if c.runner else 0,
            ", ".join(p.name for p in c.runner.projectors) if c.runner else "-",
        )
        for where in where_mail:
            log.info("%-8s %s", "mail", where)
        log.info("%-8s %s (docs: README.md; health %s/ready)", "api", base, base)
        tune_for_batches()  # start-up is done: what is alive now lives for the process
        if demo:
            tasks.append(asyncio.create_task(load_demo(c, base)))

    async def on_stop() -> None:
        for t in tasks:  # a demo load still running must not publish into a closed log
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # The embedded vector store (Qdrant Edge) belongs to one process: with projectors in
    # workers, the search worker holds it and this API answers from full text and trigram.
    with_vectors = settings.run_projectors or settings.vector_store != "edge"
    with mail_for_up(settings) as (mailer, mail_where):
        where_mail.append(mail_where)
        app = create_app(
            settings,
            run_projectors=settings.run_projectors,
            with_vectors=with_vectors,
            on_ready=on_ready,
            on_stop=on_stop,
            mailer=mailer,
        )
        return _serve(settings, app)


def _serve(settings: Settings, app: Any) -> int:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=5,
        # GET /v1/ws: devices send pings and acks, never large frames
        ws_max_size=64 * 1024,
        # off by default: frames are small JSON, and each compressing socket keeps its own
        # zlib state (docs/realtime.md, measured)
        ws_per_message_deflate=settings.ws_compression,
    )
    server = uvicorn.Server(config)
    # uvicorn handles SIGINT/SIGTERM (stop serving, then the lifespan closes every part) and
    # afterwards re-raises the signal into the handlers it found. Finding these no-ops, a
    # clean stop exits 0 instead of dying by the signal after the work is done.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    server.run()
    return 0 if server.started else 1
