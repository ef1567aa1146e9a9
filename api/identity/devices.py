"""A user's devices: each sign-in (a session) seen as the device it runs on.

``GET /v1/me/devices`` lists the signed-in devices with their name, kind (from the OAuth
client: the TV client, the apps), when each was last seen (its last token refresh or
stream heartbeat), what it is playing now and whether it is online (its open sockets,
GET /v1/ws); ``PATCH /v1/me/devices/{id}`` renames one
(DeviceRenamed, decided by the identity projector), ``DELETE`` signs it out: its refresh
tokens stop working and its access tokens are refused from then on.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.authn import require
from api.context import ctx
from api.errors import Problem
from api.identity.commands import decide, identity_event
from api.identity.tokens import revoke_session
from api.realtime_hub import online
from api.requests import read_json, reject_nul
from api.responses import Body, respond
from core.ids import from_millis, iso_z
from projections.identity.sessions import session_by_id

_KINDS = {"mgw-tv": "tv", "mgw-app": "app"}

_DEVICES_SQL = """
SELECT s.family_id, s.client_id, s.device_name, s.created_at,
       greatest(s.last_used_at, max(p.last_heartbeat)) AS last_seen,
       (array_agg(p.content_id ORDER BY p.started_at DESC)
          FILTER (WHERE p.state = 'active'))[1] AS playing,
       (array_agg(c.title ORDER BY p.started_at DESC)
          FILTER (WHERE p.state = 'active'))[1] AS playing_title
  FROM sessions s
  LEFT JOIN playback_sessions p ON p.auth_session = s.family_id
  LEFT JOIN content c ON c.content_id = p.content_id
 WHERE s.user_id = %s AND s.revoked_at IS NULL AND s.expires_at > now()
 GROUP BY s.family_id
 ORDER BY last_seen DESC
"""


class RenameIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=64)

    @field_validator("name")
    @classmethod
    def _no_nul(cls, v: Any) -> Any:
        return reject_nul(v)


async def list_devices(request: Request) -> Response:
    me = await require(request, "profile")
    c = ctx(request)
    async with c.stores.pg.connection() as conn:
        cur = await conn.execute(_DEVICES_SQL, (me.user_id,))
        rows = await cur.fetchall()
    sockets: dict[str, list[dict[str, Any]]] = {}
    if c.stores.redis is not None:
        try:
            for e in await online(c.stores.redis, me.user_id):
                sockets.setdefault(e["session_id"], []).append(
                    {
                        "connection_id": e["connection_id"],
                        "device_id": e["device_id"],
                        "connected_at": iso_z(from_millis(e["connected_at"])),
                    }
                )
        except Exception:  # presence is a nicety: the list still answers without Redis
            sockets = {}
    items = [
        {
            "id": fid,
            "name": name or client,
            "kind": _KINDS.get(client, "other"),
            "client_id": client,
            "signed_in_at": created.isoformat(),
            "last_seen": seen.isoformat(),
            "now_playing": {"content_id": playing, "title": title} if playing else None,
            "current": fid == me.session_id,
            "online": fid in sockets,
            "sockets": sockets.get(fid, []),
        }
        for fid, client, name, created, seen, playing, title in rows
    ]
    return respond(Devices, {"items": items})


class Socket(Body):
    connection_id: str
    device_id: str | None
    connected_at: datetime


class NowPlaying(Body):
    content_id: str
    title: str | None


class Device(Body):
    """A sign-in as a device, with what it plays now and its open sockets."""

    id: str
    name: str
    kind: str
    client_id: str
    signed_in_at: datetime
    last_seen: datetime
    now_playing: NowPlaying | None
    current: bool
    online: bool
    sockets: list[Socket]


class Devices(Body):
    items: list[Device]


class DeviceName(Body):
    id: str
    name: str


async def _own(request: Request, user_id: str) -> str:
    fid: str = request.path_params["device_id"]
    if len(fid) > 64 or "\x00" in fid:
        raise Problem(404, "no such device", field="device_id")
    async with ctx(request).stores.pg.connection() as conn:
        session = await session_by_id(conn, fid)
    if session is None or session.user_id != user_id or session.revoked_at is not None:
        raise Problem(404, "no such device", field="device_id")
    return fid


async def rename_device(request: Request) -> Response:
    me = await require(request, "profile")
    body = await read_json(request, RenameIn)
    fid = await _own(request, me.user_id)
    outcome, _ = await decide(
        ctx(request),
        identity_event(
            request,
            "DeviceRenamed",
            me.user_id,
            {"user_id": me.user_id, "family_id": fid, "device_name": body.name},
        ),
    )
    if outcome != "ok":
        raise Problem(404, "no such device", field="device_id")
    return respond(DeviceName, {"id": fid, "name": body.name})


async def remove_device(request: Request) -> Response:
    me = await require(request, "profile")
    fid = await _own(request, me.user_id)
    await revoke_session(request, me.user_id, fid, "revoke")
    return Response(status_code=204)


routes = [
    Route("/v1/me/devices", list_devices, methods=["GET"]),
    Route("/v1/me/devices/{device_id}", rename_device, methods=["PATCH"]),
    Route("/v1/me/devices/{device_id}", remove_device, methods=["DELETE"]),
]
