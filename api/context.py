"""What every route reaches through ``request.app.state``: the open platform."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from core.settings import Settings
from projections.base import Stores
from streams.log import EventLog, Position
from streams.publisher import Publisher


@dataclass
class AppContext:
    settings: Settings
    log: EventLog
    stores: Stores
    publisher: Publisher
    runner: Any = None  # the embedded runner when projectors run in this process
    search: Any = None  # projections.search_engine.SearchEngine
    recs: Any = None  # projections.recs_engine.RecsEngine
    shards: Any = None  # mgw.worker.ShardSupervisor: the shard processes `mgw up` started
    identity: Any = None  # api.identity.services.IdentityServices
    realtime: Any = None  # api.realtime_hub.Hub: this process's sockets
    where: dict[str, str] = field(default_factory=dict)


def ctx(request: Request) -> AppContext:
    c: AppContext = request.app.state.mgw
    return c


def accepted(pos: Position, **extra: Any) -> JSONResponse:
    token = pos.token()
    return JSONResponse(
        {"position": token, **extra}, status_code=202, headers={"X-Consistency-Token": token}
    )
