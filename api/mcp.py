"""The MCP server: assistants search the catalog, tell where to watch and keep a
watchlist, with the tools of api/mcp_tools.py, over two transports.

- **stdio**, ``mgw mcp [--api-url URL]``: a client of a running gateway, for an assistant
  on the user's machine. Its credential comes from ``MGW_API_TOKEN`` or ``MGW_API_KEY``.
- **streamable HTTP** at ``/mcp`` inside the API, stateless (any API process answers any
  request, as for REST). Authorization follows the MCP specification: a bearer token
  (or ``X-Api-Key``) on each request; a credential that fails is 401 with a
  ``WWW-Authenticate`` naming the protected resource metadata
  (``/.well-known/oauth-protected-resource/mcp``, RFC 9728), which points at this API's
  own OAuth server. Signed out, only the public tools are listed and callable.

Tools reach the REST API through api/mcp_gateway.py: over the network from stdio, and
through the app itself (an in-process ASGI transport) from ``/mcp``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import mcp_types as types
from mcp.server import Server, ServerRequestContext
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.authn import authenticate
from api.errors import Problem
from api.identity.oauth import openid_configuration
from api.mcp_gateway import Gateway, ToolError
from api.mcp_tools import BY_NAME, TOOLS, Tool, visible

NAME = "media-gateway"
PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource"
TOOL_SCOPES = frozenset(t.scope for t in TOOLS if t.scope)
INSTRUCTIONS = (
    "Media Gateway merges the catalogs of Netflix, Prime Video, Disney+, HBO Max, Hulu,"
    " Apple TV+, Paramount+ and Peacock. Find titles with search_titles (a description of"
    " the story works as well as a name), then use their content_id with title_details,"
    " where_to_watch and the watchlist tools. Personal tools need the user signed in."
)
_SCOPE_KEY = "mgw.mcp.caller"


@dataclass(frozen=True, slots=True)
class Caller:
    gateway: Gateway
    #: the token's scopes; None signed out
    scopes: frozenset[str] | None


def build_server(caller_of: Callable[[ServerRequestContext[Any, Any]], Caller]) -> Server[Any]:
    async def list_tools(
        ctx: ServerRequestContext[Any, Any], _: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = caller_of(ctx)
        return types.ListToolsResult(tools=[describe(t) for t in visible(caller.scopes)])

    async def call_tool(
        ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        return await call(caller_of(ctx), params.name, params.arguments or {})

    from importlib.metadata import version

    return Server(
        NAME,
        version=version("media-gateway"),
        title="Media Gateway",
        instructions=INSTRUCTIONS,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
    )


def describe(t: Tool) -> types.Tool:
    return types.Tool(
        name=t.name,
        title=t.title,
        description=t.description + ("" if t.scope is None else " Requires signing in."),
        input_schema=t.input_schema(),
        annotations=types.ToolAnnotations(
            title=t.title,
            read_only_hint=t.read_only,
            destructive_hint=False,
            idempotent_hint=True,
            open_world_hint=False,
        ),
    )


async def call(caller: Caller, name: str, arguments: dict[str, Any]) -> types.CallToolResult:
    tool = BY_NAME.get(name)
    if tool is None:
        names = ", ".join(t.name for t in visible(caller.scopes))
        return failed(f"unknown tool {name!r}; the tools are: {names}")
    if tool.scope is not None and caller.scopes is None:
        return failed(
            f"sign-in required: {name} acts for a user. Connect with a bearer token that has"
            f" the {tool.scope!r} scope or an API key. {caller.gateway.signin_hint}".strip()
        )
    if tool.scope is not None and caller.scopes is not None and tool.scope not in caller.scopes:
        return failed(f"not allowed: {name} needs a token with the {tool.scope!r} scope")
    try:
        args = tool.args.model_validate(arguments)
    except ValidationError as e:
        return failed("invalid arguments: " + "; ".join(_field_errors(e)))
    try:
        body = await caller.gateway.send(tool.call(args))
    except ToolError as e:
        return failed(str(e))
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    return types.CallToolResult(
        content=[types.TextContent(text=text)],
        structured_content=body if isinstance(body, dict) else {"result": body},
    )


def failed(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(text=message)], is_error=True)


def _field_errors(e: ValidationError) -> list[str]:
    out = []
    for err in e.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        out.append(f"{where}: {err['msg']}")
    return out


# -- stdio ------------------------------------------------------------------------------


async def serve_stdio(gateway: Gateway) -> None:
    """One assistant over stdin/stdout, calling the API at ``gateway.base_url``."""
    from mcp.server.stdio import stdio_server

    signed_in = gateway.authorization is not None or gateway.api_key is not None
    caller = Caller(gateway, TOOL_SCOPES if signed_in else None)
    server = build_server(lambda _ctx: caller)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


# -- streamable HTTP inside the API -----------------------------------------------------


class McpEndpoint:
    """``/mcp``: authenticate the request as REST does, then hand it to the SDK's
    streamable HTTP transport with the caller attached."""

    def __init__(self, *, timeout_s: float = 10.0, attempts: int = 3) -> None:
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.server = build_server(self._caller)
        self.manager = StreamableHTTPSessionManager(
            app=self.server,
            stateless=True,
            json_response=True,
            # bearer tokens, not ambient cookies, authorize here: DNS rebinding gains nothing
            security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.manager.run():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            principal = await authenticate(request)
        except Problem as p:
            p.headers["WWW-Authenticate"] = (
                f'Bearer error="invalid_token", resource_metadata="{metadata_url(request)}"'
            )
            await p.response(request)(scope, receive, send)
            return
        gateway = Gateway(
            str(request.base_url).rstrip("/"),
            authorization=request.headers.get("Authorization"),
            api_key=request.headers.get("X-Api-Key"),
            transport=httpx.ASGITransport(
                app=scope["app"], client=request.client or ("127.0.0.1", 0)
            ),
            timeout_s=self.timeout_s,
            attempts=self.attempts,
            signin_hint=f"OAuth metadata: {metadata_url(request)}",
        )
        scopes = None if principal is None else frozenset(principal.scopes)
        scope[_SCOPE_KEY] = Caller(gateway, scopes)
        await self.manager.asgi_app(scope, receive, send)

    @staticmethod
    def _caller(ctx: ServerRequestContext[Any, Any]) -> Caller:
        request = ctx.request
        assert isinstance(request, Request), "streamable HTTP hands handlers the request"
        caller: Caller = request.scope[_SCOPE_KEY]
        return caller


def metadata_url(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}{METADATA_PATH}{PATH}"


async def protected_resource_metadata(request: Request) -> Response:
    """RFC 9728 protected resource metadata for ``/mcp``: where to get a token for it."""
    base = str(request.base_url).rstrip("/")
    issuer = getattr(getattr(request.app.state, "mgw", None), "identity", None)
    return JSONResponse(
        {
            "resource": f"{base}{PATH}",
            "authorization_servers": [issuer.issuer if issuer is not None else base],
            "scopes_supported": sorted(TOOL_SCOPES),
            "bearer_methods_supported": ["header"],
            "resource_name": "Media Gateway MCP server",
            "resource_documentation": f"{base}/docs",
        },
        headers={"Cache-Control": "public, max-age=300"},
    )


async def authorization_server_metadata(request: Request) -> Response:
    """RFC 8414 authorization server metadata: what MCP clients look for first; the same
    document as the OpenID configuration."""
    return await openid_configuration(request)


def routes(endpoint: McpEndpoint) -> list[Route]:
    return [
        Route(PATH, endpoint, include_in_schema=False),
        Route(f"{METADATA_PATH}{PATH}", protected_resource_metadata, methods=["GET"]),
        Route(
            "/.well-known/oauth-authorization-server",
            authorization_server_metadata,
            methods=["GET"],
        ),
    ]
