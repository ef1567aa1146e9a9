"""The MCP server end to end, through the SDK's own client: over streamable HTTP at /mcp
of a real uvicorn server and over stdio from `mgw mcp`, both calling the real API (real
PostgreSQL, Redis, the embedded log). Tools are listed and called, a write without a
token is refused, a frozen API times out, a busy one is retried."""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from api.mcp_gateway import Gateway, ToolError, explain
from api.mcp_tools import TOOLS, SearchArgs, visible
from core.settings import Settings
from projections.resolution import new_cluster_id
from tests.identity_helpers import PASSWORD
from tests.live_server import LiveServer
from tests.test_catalog_api import SECRET, day, deliver, netflix_title

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = {"search_titles", "title_details", "where_to_watch", "leaving_soon", "new_arrivals"}
EVERY = {t.name for t in TOOLS}


@pytest.fixture
def app_settings(settings: Settings) -> Settings:
    from dataclasses import replace

    return replace(settings, webhook_secrets=(("netflix", SECRET),))


@pytest.fixture
def gateway(app_settings: Settings) -> Iterator[dict[str, Any]]:
    """A live API with two Netflix titles (one arrived, one leaving) and a signed-in user."""
    from mgw.app import create_app

    with (
        LiveServer(create_app(app_settings)) as server,
        httpx2.Client(base_url=server.http, timeout=30) as http,
    ):
        titles = [
            netflix_title(81000001, "The Matrix", 1999),
            netflix_title(81000002, "Paddington", 2014, availability=[
                {"country": "US", "plan": "standard", "maxQuality": "HD", "endDate": day(4)}
            ]),
        ]  # fmt: skip
        assert deliver(http, titles, delivery="mcp-1").status_code == 202  # type: ignore[arg-type]
        matrix = new_cluster_id("netflix", "81000001")
        _until(lambda: http.get(f"/v1/content/{matrix}").status_code == 200)
        email = f"mcp.{time.time_ns()}@example.com"
        r = http.post(
            "/v1/auth/register",
            json={"email": email, "password": PASSWORD, "display_name": "Assistant User"},
        )
        assert r.status_code == 201, r.text
        r = http.post(
            "/oauth/token",
            data={"grant_type": "password", "client_id": "mgw-app", "username": email,
                  "password": PASSWORD},
        )  # fmt: skip
        assert r.status_code == 200, r.text
        yield {
            "base": server.http,
            "token": r.json()["access_token"],
            "matrix": matrix,
            "paddington": new_cluster_id("netflix", "81000002"),
            "http": http,
        }


def _until(ok: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not ok():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def _body(result: Any) -> Any:
    assert not result.is_error, result.content[0].text
    return json.loads(result.content[0].text)


def _error(result: Any) -> str:
    assert result.is_error, result.content[0].text
    return str(result.content[0].text)


async def _names(client: Client) -> set[str]:
    return {t.name for t in (await client.list_tools()).tools}


async def _search_until_found(client: Client, query: str, cid: str) -> dict[str, Any]:
    for _ in range(150):  # the search index follows the catalog by a moment
        body = _body(await client.call_tool("search_titles", {"query": query, "limit": 5}))
        if any(i["id"] == cid for i in body["items"]):
            return body  # type: ignore[no-any-return]
        await anyio.sleep(0.2)
    raise AssertionError(f"{query!r} never found {cid}")


async def _every_tool(client: Client, g: dict[str, Any]) -> None:
    """Calls each of the ten tools as a signed-in user."""
    assert await _names(client) == EVERY
    await _search_until_found(client, "matrix", g["matrix"])
    details = _body(await client.call_tool("title_details", {"content_id": g["matrix"]}))
    assert details["title"] == "The Matrix"
    where = _body(await client.call_tool("where_to_watch", {"content_id": g["matrix"]}))
    offer = where["items"][0]
    assert offer["platform"] == "netflix"
    assert offer["deep_links"]["web"] == "https://www.netflix.com/title/81000001"
    new = _body(await client.call_tool("new_arrivals", {"region": "US"}))
    assert g["matrix"] in {i["content_id"] for i in new["items"]}
    leaving = _body(await client.call_tool("leaving_soon", {"days": 7}))
    assert [i["content_id"] for i in leaving["items"]] == [g["paddington"]]
    assert "items" in _body(await client.call_tool("recommendations", {"limit": 5}))
    assert _body(await client.call_tool("continue_watching", {}))["items"] == []

    _body(await client.call_tool("watchlist_add", {"content_id": g["paddington"]}))
    # the add answered once the library showed it: the very next read sees it
    listed = _body(await client.call_tool("watchlist_list", {}))
    assert [i["content_id"] for i in listed["items"]] == [g["paddington"]]
    _body(await client.call_tool("watchlist_remove", {"content_id": g["paddington"]}))
    assert _body(await client.call_tool("watchlist_list", {}))["items"] == []

    missing = _error(await client.call_tool("watchlist_add", {"content_id": "no-such-title"}))
    assert missing.startswith("not found") and "search_titles" in missing
    bad = _error(await client.call_tool("search_titles", {"limit": 500}))
    assert "limit" in bad
    unknown = _error(await client.call_tool("play_movie", {}))
    assert "search_titles" in unknown


@pytest.mark.timeout(600)
def test_streamable_http_lists_and_calls_every_tool_and_refuses_writes_signed_out(
    gateway: dict[str, Any],
) -> None:
    url = f"{gateway['base']}/mcp"

    async def signed_out() -> None:
        async with Client(url) as client:
            assert await _names(client) == PUBLIC
            assert client.server_info is not None
            assert client.server_info.name == "media-gateway"
            await _search_until_found(client, "matrix", gateway["matrix"])
            refused = _error(
                await client.call_tool("watchlist_add", {"content_id": gateway["matrix"]})
            )
            assert refused.startswith("sign-in required")
            assert "/.well-known/oauth-protected-resource/mcp" in refused

    async def signed_in() -> None:
        headers = {"Authorization": f"Bearer {gateway['token']}"}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=60) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            await _every_tool(client, gateway)

    anyio.run(signed_out)
    anyio.run(signed_in)


def test_a_refused_token_gets_401_naming_the_protected_resource_metadata(
    gateway: dict[str, Any],
) -> None:
    http = gateway["http"]
    # a bare JSON-RPC call, as in docs/mcp.md: stateless, no session to open first
    r = http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Accept": "application/json, text/event-stream",
                 "MCP-Protocol-Version": "2025-06-18"},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    assert {t["name"] for t in r.json()["result"]["tools"]} == PUBLIC
    r = http.post(
        "/mcp",
        json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        headers={"Authorization": "Bearer not-a-token", "Accept": "application/json"},
    )
    assert r.status_code == 401
    challenge = r.headers["WWW-Authenticate"]
    assert 'error="invalid_token"' in challenge
    meta_url = challenge.split('resource_metadata="')[1].rstrip('"')
    meta = httpx2.get(meta_url, timeout=30).json()
    assert meta["resource"] == f"{gateway['base']}/mcp"
    assert set(meta["scopes_supported"]) == {"library", "playback"}
    issuer = meta["authorization_servers"][0]
    as_meta = http.get("/.well-known/oauth-authorization-server").json()
    assert as_meta["issuer"] == issuer
    assert "authorization_code" in as_meta["grant_types_supported"]
    assert as_meta["code_challenge_methods_supported"] == ["S256"]


def _stdio(base: str, *extra: str, token: str | None = None) -> StdioServerParameters:
    env = {"MGW_API_TOKEN": token} if token else {}
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "mgw.cli", "mcp", "--api-url", base, *extra],
        env=env,
        cwd=str(ROOT),
    )


@pytest.mark.timeout(600)
def test_stdio_server_from_the_cli_lists_and_calls_every_tool(gateway: dict[str, Any]) -> None:
    async def go() -> None:
        async with Client(_stdio(gateway["base"])) as anonymous:
            assert await _names(anonymous) == PUBLIC
            refused = _error(await anonymous.call_tool("watchlist_list", {}))
            assert refused.startswith("sign-in required") and "MGW_API_TOKEN" in refused
        async with Client(_stdio(gateway["base"], token=gateway["token"])) as client:
            await _every_tool(client, gateway)

    anyio.run(go)


@pytest.fixture
def frozen_api() -> Iterator[str]:
    """An API that accepts connections and never answers: a frozen dependency."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(sock.accept()[0])
            except OSError:
                continue

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    stop.set()
    t.join(5)
    for c in held:
        c.close()
    sock.close()


def test_a_frozen_api_times_out_with_advice_instead_of_hanging(frozen_api: str) -> None:
    async def go() -> None:
        params = _stdio(frozen_api, "--timeout", "0.5", "--attempts", "2")
        async with Client(params) as client:
            text = _error(await client.call_tool("search_titles", {"query": "alien"}))
            assert "did not answer within 0.5 s" in text and "2 attempts" in text

    anyio.run(go)


def test_an_unreachable_api_is_reported_with_its_address() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now

    async def go() -> None:
        gw = Gateway(f"http://127.0.0.1:{port}", attempts=2)
        with pytest.raises(ToolError, match=f"127.0.0.1:{port} could not be reached"):
            await gw.send(TOOLS[0].call(SearchArgs(query="x")))

    anyio.run(go)


def test_a_busy_api_is_retried_and_a_write_keeps_one_idempotency_key() -> None:
    seen: list[tuple[str, str | None]] = []

    async def busy_once(scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope["headers"])
        seen.append((scope["path"], (headers.get(b"idempotency-key") or b"").decode() or None))
        if scope["path"] == "/v1/me/watchlist" and scope["method"] == "POST" and len(seen) < 3:
            status, body, extra = 503, b'{"detail":"warming up"}', [(b"retry-after", b"0")]
        else:
            status, body, extra = 200, b'{"status":"applied"}', []
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *extra]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def go() -> None:
        gw = Gateway(
            "http://api.test", authorization="Bearer t", transport=httpx.ASGITransport(busy_once)
        )
        add = next(t for t in TOOLS if t.name == "watchlist_add")
        assert await gw.send(add.call(add.args(content_id="c1"))) == {"status": "applied"}

    anyio.run(go)
    # the title check, then two attempts at the write with one key
    assert [p for p, _ in seen] == ["/v1/content/c1", "/v1/me/watchlist", "/v1/me/watchlist"]
    keys = {k for p, k in seen[1:]}
    assert len(keys) == 1 and None not in keys


def test_errors_read_as_advice() -> None:
    assert explain(404, {"detail": "no content with id 'x'"}).endswith(
        "Find content_ids with search_titles."
    )
    said = explain(422, {"detail": "must be at most 100", "field": "limit"})
    assert said == "invalid argument limit: must be at most 100"
    assert "bearer token" in explain(401, {"detail": "access token refused: expired"})
    assert explain(409, {"detail": "choose your services first"}).startswith("cannot do that")


def test_signed_out_callers_see_only_the_public_tools() -> None:
    assert {t.name for t in visible(None)} == PUBLIC
    assert {t.name for t in visible(frozenset({"library"}))} == EVERY - {"continue_watching"}
    for t in TOOLS:
        schema = t.input_schema()
        assert schema["type"] == "object" and schema.get("additionalProperties") is False


def test_search_arguments_become_the_search_parameters() -> None:
    call = TOOLS[0].call(
        SearchArgs(query="heist", genres=["Crime", "Drama"], platforms=["netflix", "hulu"],
                   year_from=1990, on_my_services=True, limit=5)
    )  # fmt: skip
    assert call.method == "GET" and call.path == "/v1/search"
    assert dict(call.params) == {
        "q": "heist", "limit": "5", "genre": "Crime,Drama", "platform": "netflix,hulu",
        "year_from": "1990", "services": "mine",
    }  # fmt: skip
