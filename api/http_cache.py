"""Conditional GETs for catalog reads: ``ETag``, ``If-None-Match`` -> 304, ``Cache-Control``.

A title page or a catalog list changes a few times a day, and clients (TV apps above all)
re-read them on every screen. The ETag is a hash of the body as sent, so it is exact with
no version column to keep: a client that sends it back gets a bodiless 304. Answers that
depend on who asks (a token, a profile's parental limit) are ``private``; anonymous ones
may be kept by shared caches for a minute.
"""

from __future__ import annotations

import hashlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: GET routes whose answers are catalog data, by path prefix
PREFIXES = ("/v1/content/", "/v1/catalog/")
MAX_AGE_S = 60
_PERSONAL = (b"authorization", b"x-profile-id")


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: weak comparison over a list, or ``*``."""
    tags = [t.strip() for t in if_none_match.split(",")]
    return "*" in tags or any(t.removeprefix("W/") == etag for t in tags)


class ConditionalGet:
    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...] = PREFIXES) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] not in ("GET", "HEAD")
            or not scope["path"].startswith(self.prefixes)
        ):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        personal = any(h in headers for h in _PERSONAL)
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffer(msg: Message) -> None:
            nonlocal start
            if msg["type"] == "http.response.start":
                start = msg
                return
            if msg["type"] == "http.response.body":
                chunks.append(msg.get("body", b""))
                if msg.get("more_body"):
                    return
                await self._finish(start, b"".join(chunks), headers, personal, send)

        await self.app(scope, receive, buffer)

    async def _finish(
        self,
        start: Message | None,
        body: bytes,
        request_headers: dict[bytes, bytes],
        personal: bool,
        send: Send,
    ) -> None:
        assert start is not None
        out = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        if start["status"] != 200:
            await send({**start, "headers": [*out, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        etag = etag_of(body)
        scope_ = "private" if personal else "public"
        out += [
            (b"etag", etag.encode()),
            (b"cache-control", f"{scope_}, max-age={MAX_AGE_S}".encode()),
            (b"vary", b"Authorization, X-Profile-Id"),
        ]
        if matches(request_headers.get(b"if-none-match", b"").decode("latin-1"), etag):
            await send({"type": "http.response.start", "status": 304, "headers": out})
            await send({"type": "http.response.body", "body": b""})
            return
        out.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": out})
        await send({"type": "http.response.body", "body": body})
