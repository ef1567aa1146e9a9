"""Sending a tool's request to the API: a deadline per attempt, retries on what passes
(a refused connection, a timeout, 429/502/503/504 with their Retry-After), and every
failure turned into a sentence an assistant can act on.

Retries are safe: reads change nothing, and a write carries one ``Idempotency-Key`` for
all its attempts, so the library applies it once however many times it arrives.
A write's answer is awaited until the library shows it (its ``X-Consistency-Token`` is
sent back on a read), so the next tool call sees it on any transport.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx

from api.mcp_tools import Call, path_id
from core.backoff import Backoff

#: statuses worth another attempt: the API said "not now", not "no"
TRANSIENT = frozenset({429, 502, 503, 504})
#: a Retry-After longer than this is reported rather than waited for
MAX_WAIT_S = 5.0


class ToolError(Exception):
    """A failure, worded for the model that called the tool."""


@dataclass(slots=True)
class Gateway:
    """The API as one caller sees it: its credential and where the API is."""

    base_url: str
    #: the value of the Authorization header (``Bearer ...``), or None signed out
    authorization: str | None = None
    api_key: str | None = None
    #: in-process calls (``/mcp`` inside the API) go through the app itself
    transport: httpx.AsyncBaseTransport | None = None
    timeout_s: float = 10.0
    attempts: int = 3
    backoff: Backoff = field(default_factory=lambda: Backoff(first=0.25, cap=2.0))
    #: where sign-in is explained, for the 401 message
    signin_hint: str = ""

    def _headers(self) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "mgw-mcp"}
        if self.authorization:
            h["Authorization"] = self.authorization
        elif self.api_key:
            h["X-Api-Key"] = self.api_key
        return h

    async def send(self, call: Call) -> Any:
        async with httpx.AsyncClient(
            base_url=self.base_url,
            transport=self.transport,
            headers=self._headers(),
            timeout=httpx.Timeout(self.timeout_s),
            follow_redirects=False,
        ) as client:
            if call.check_title is not None:
                await self._request(client, Call("GET", f"/v1/content/{path_id(call.check_title)}"))
            headers = {"Idempotency-Key": str(uuid.uuid4())} if call.idempotent_write else {}
            r = await self._request(client, call, headers)
            body = _json(r)
            token = r.headers.get("X-Consistency-Token")
            if token and call.settle is not None:
                # read-your-writes: the read waits until the projection covers the write
                await self._request(
                    client,
                    Call("GET", call.settle, [("limit", "1")]),
                    {"X-Consistency-Token": token},
                )
            return body

    async def _request(
        self, client: httpx.AsyncClient, call: Call, headers: dict[str, str] | None = None
    ) -> httpx.Response:
        failure = ""
        for attempt in range(self.attempts):
            last = attempt == self.attempts - 1
            try:
                # the transport's own timeouts do not reach an in-process app: a
                # deadline around the whole exchange does
                async with asyncio.timeout(self.timeout_s):
                    r = await client.request(
                        call.method, call.path, params=httpx.QueryParams(tuple(call.params)),
                        json=call.json, headers=headers,
                    )  # fmt: skip
            except TimeoutError:
                failure = f"the API did not answer within {self.timeout_s:g} s"
            except httpx.TransportError as exc:
                failure = f"the API at {self.base_url} could not be reached ({_reason(exc)})"
            else:
                if r.status_code not in TRANSIENT:
                    if r.status_code >= 400:
                        raise ToolError(explain(r.status_code, _problem(r), self.signin_hint))
                    return r
                wait = _retry_after(r)
                failure = _busy(r.status_code, _problem(r), wait)
                if last or (wait is not None and wait > MAX_WAIT_S):
                    raise ToolError(failure)
                await asyncio.sleep(wait if wait is not None else self.backoff.delay(attempt))
                continue
            if not last:
                await asyncio.sleep(self.backoff.delay(attempt))
        raise ToolError(f"{failure}, {self.attempts} attempts; try again shortly")


def explain(status: int, problem: dict[str, Any], signin_hint: str = "") -> str:
    """An error response as advice: what was wrong and what to do next."""
    detail = str(problem.get("detail") or problem.get("error_description") or "")
    where = problem.get("field")
    said = f"{where}: {detail}" if where and where not in detail else detail
    if status == 401:
        return (
            f"sign-in required ({detail or 'no credential'}). This tool acts for a user: "
            f"call it with a bearer token or API key. {signin_hint}"
        ).strip()
    if status == 403:
        return f"not allowed: {said or 'the token lacks the scope this tool needs'}"
    if status == 404:
        return f"not found: {said}. Find content_ids with search_titles."
    if status == 409:
        return f"cannot do that yet: {said}"
    if status in (400, 422):
        return f"invalid argument {said}".rstrip()
    return f"the API refused the call ({status}): {said}"


def _busy(status: int, problem: dict[str, Any], wait: float | None) -> str:
    detail = str(problem.get("detail") or "")
    when = f"; retry after {wait:g} s" if wait is not None else ""
    if status == 429:
        return f"rate limited{when}"
    return f"the API is unavailable ({status}{': ' + detail if detail else ''}){when}"


def _retry_after(r: httpx.Response) -> float | None:
    raw = r.headers.get("Retry-After")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def _problem(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"detail": r.text[:200]}
    return body if isinstance(body, dict) else {}


def _json(r: httpx.Response) -> Any:
    if not r.content:
        return {}
    try:
        return r.json()
    except json.JSONDecodeError:
        raise ToolError(f"the API answered {r.status_code} with a body that is not JSON") from None


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__
