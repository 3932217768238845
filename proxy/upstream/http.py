"""Streamable HTTP transport to one upstream replica, over a pooled aiohttp session.

Every request is one POST; its reply is JSON or an SSE stream that may carry
notifications and server-to-client requests before the response, all delivered
with the id of the request they belong to. Unsolicited messages arrive on the GET
stream, which is re-opened while the session lives.

In a session revision an upstream may end an answer's stream before the answer, on
purpose (to make clients poll, SEP-1699) or not: if its events carried ids, the stream is
resumed with a GET carrying ``Last-Event-ID`` after the ``retry`` delay it asked for, and
read until the answer. The GET stream is re-opened with ``Last-Event-ID`` too. 2026-07-28
has no resumption.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp
import orjson

from only1mcp.proxy.redact import redact_url
from only1mcp.proxy.upstream.base import Deliver, HttpStatusError, SessionExpired, TransportClosed
from only1mcp.proxy.upstream.http1 import Http1Error, Http1Pool

__all__ = ["HttpTransport"]

log = logging.getLogger("only1mcp.upstream.http")

_ACCEPT = "application/json, text/event-stream"
_RETRY_DEFAULT_MS = 1000  # an upstream that names no retry delay: the SDKs' default
_RESUME_ATTEMPTS = 3  # resumes in a row that bring nothing new before the call is failed


class _Cursor:
    """Where an SSE stream got to: its last event id, the retry delay it asked for, whether it answered."""

    __slots__ = ("last_id", "retry_ms", "answered")

    def __init__(self) -> None:
        self.last_id: str | None = None
        self.retry_ms: int | None = None
        self.answered = False


class HttpTransport:
    relates_messages = True  # a message about a call arrives on that call's POST stream, never the GET
    def __init__(self, url: str, headers: Mapping[str, str], http: aiohttp.ClientSession, *,
                 connect_timeout: float, fast: Http1Pool | None = None, listen: bool = True) -> None:
        self._listen_for_unsolicited = listen
        self.url = url
        self._http = http
        self._fast = fast if fast is not None and fast.supports(url) else None
        self._base_headers = {"Accept": _ACCEPT, "Content-Type": "application/json", **headers}
        self._headers = dict(self._base_headers)
        self._connect_timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout)
        self._deliver: Deliver | None = None
        self._on_closed: Callable[[str], None] | None = None
        self._get_task: asyncio.Task[None] | None = None
        self._session_id: str | None = None
        self._closed = False
        self._resumable = False  # set once a session revision is negotiated

    async def start(self, deliver: Deliver, on_closed: Callable[[str], None]) -> None:
        self._deliver, self._on_closed = deliver, on_closed

    def initialized(self, protocol_version: str) -> None:
        self._headers["MCP-Protocol-Version"] = protocol_version
        self._resumable = protocol_version != "2026-07-28"  # that revision has no resumability
        if self._listen_for_unsolicited:
            self._get_task = asyncio.get_running_loop().create_task(self._listen())

    async def send(self, message: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        assert self._deliver is not None
        related = message.get("id") if "method" in message else None
        merged = {**self._headers, **headers} if headers else self._headers
        if self._fast is not None:
            await self._send_fast(message, related, merged)
            return
        cursor: _Cursor | None = None
        try:
            async with self._http.post(self.url, data=orjson.dumps(message), headers=merged,
                                       timeout=self._connect_timeout) as resp:
                if self._session_id is None and "mcp-session-id" in resp.headers:
                    self._session_id = resp.headers["mcp-session-id"]
                    self._headers["Mcp-Session-Id"] = self._session_id
                if resp.status == 202:
                    return
                if resp.status == 404 and self._session_id is not None:
                    self._lost("upstream session expired (HTTP 404)")
                    raise SessionExpired(self.url)
                if resp.status != 200:
                    body = (await resp.read())[:300].decode("utf-8", "replace")
                    await self._deliver_http_error(message, resp.status, body)
                    return
                if resp.content_type == "text/event-stream":
                    cursor = _Cursor()
                    await self._read_events(resp.content, related, cursor)
                else:
                    body = await resp.read()
                    if body:
                        self._deliver_payload(body, related)
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self._lost(reason)
            raise TransportClosed(reason) from exc
        if cursor is not None and related is not None and not cursor.answered:
            await self._resume(related, cursor)

    async def _send_fast(self, message: dict[str, Any], related: Any, headers: Mapping[str, str]) -> None:
        try:
            resp = await self._fast.post(self.url, orjson.dumps(message), headers)  # type: ignore[union-attr]
        except Http1Error as exc:
            self._lost(str(exc))
            raise TransportClosed(str(exc)) from exc
        cursor: _Cursor | None = None
        try:
            if self._session_id is None and resp.header("mcp-session-id"):
                self._session_id = resp.header("mcp-session-id")
                self._headers["Mcp-Session-Id"] = self._session_id  # type: ignore[assignment]
            if resp.status == 202:
                await resp.read()
            elif resp.status == 404 and self._session_id is not None:
                await resp.read()
                self._lost("upstream session expired (HTTP 404)")
                raise SessionExpired(self.url)
            elif resp.status != 200:
                body = (await resp.read())[:300].decode("utf-8", "replace")
                await self._deliver_http_error(message, resp.status, body)
            elif resp.content_type == "text/event-stream":
                cursor = _Cursor()
                await self._read_events(_lines(resp.chunks()), related, cursor)
            else:
                body = await resp.read()
                if body:
                    self._deliver_payload(body, related)
        except Http1Error as exc:
            self._lost(str(exc))
            raise TransportClosed(str(exc)) from exc
        except BaseException:
            resp.close()
            raise
        if cursor is not None and related is not None and not cursor.answered:
            await self._resume(related, cursor)

    async def _deliver_http_error(self, message: dict[str, Any], status: int, body: str) -> None:
        # A JSON-RPC error in the body is the upstream's answer; anything else becomes one.
        try:
            payload = orjson.loads(body)
            if isinstance(payload, dict) and "error" in payload and "id" in message:
                payload["id"] = message["id"]
                self._deliver(payload, None)  # type: ignore[misc]
                return
        except orjson.JSONDecodeError:
            pass
        if status >= 500:  # the server (or a balancer before it) failed, not the request: retryable
            raise HttpStatusError(status, body.strip()[:200])
        if "id" in message and "method" in message:
            error = {"code": -32603, "message": f"upstream answered HTTP {status}: {body.strip()[:200]}"}
            self._deliver({"jsonrpc": "2.0", "id": message["id"], "error": error}, None)  # type: ignore[misc]

    async def _read_events(self, content: Any, related: Any, cursor: _Cursor, until_answered: bool = False) -> None:
        data: list[bytes] = []
        async for line in content:
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    self._deliver_payload(b"\n".join(data), related, cursor)
                    data.clear()
                    if until_answered and cursor.answered:
                        return  # a resumed stream may stay open after the answer: it is not read further
            elif line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif line.startswith(b"id:"):
                cursor.last_id = (line[4:] if line[3:4] == b" " else line[3:]).decode("latin-1") or None
            elif line.startswith(b"retry:") and line[6:].strip().isdigit():
                cursor.retry_ms = int(line[6:].strip())
        if data:
            self._deliver_payload(b"\n".join(data), related, cursor)

    async def _resume(self, related: Any, cursor: _Cursor) -> None:
        """The answer's stream ended before the answer: GET it again with Last-Event-ID until the answer comes
        (the call's timeout bounds the wait). Without ids or resumability the call waits for its timeout."""
        if not self._resumable or cursor.last_id is None:
            return
        fruitless = 0
        while not cursor.answered and not self._closed and fruitless < _RESUME_ATTEMPTS:
            await asyncio.sleep((cursor.retry_ms if cursor.retry_ms is not None else _RETRY_DEFAULT_MS) / 1000)
            seen = cursor.last_id
            headers = {**self._headers, "Accept": "text/event-stream", "Last-Event-ID": seen}
            headers.pop("Content-Type", None)
            try:
                async with self._http.get(self.url, headers=headers, timeout=self._connect_timeout) as resp:
                    if resp.status == 200 and resp.content_type == "text/event-stream":
                        await self._read_events(resp.content, related, cursor, until_answered=True)
            except (aiohttp.ClientError, OSError) as exc:
                log.debug("resuming a stream of %s: %s", redact_url(self.url), exc)
            fruitless = 0 if cursor.last_id != seen else fruitless + 1
        if not cursor.answered:
            error = {"code": -32011, "message": "upstream ended the answer's stream before the answer, and "
                     f"resuming it with Last-Event-ID failed {fruitless} times"}
            self._deliver({"jsonrpc": "2.0", "id": related, "error": error}, None)  # type: ignore[misc]

    def _deliver_payload(self, payload: bytes, related: Any, cursor: _Cursor | None = None) -> None:
        if not payload.strip():
            return  # an event without data: a priming event, or a keep-alive
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # Its size only: the bytes may be a (broken) result, which logs never carry.
            log.warning("%s sent a message that is not JSON (%d bytes)", redact_url(self.url), len(payload))
            return
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict):
                if cursor is not None and related is not None and item.get("id") == related and "method" not in item:
                    cursor.answered = True
                self._deliver(item, related)  # type: ignore[misc]

    async def _listen(self) -> None:
        """Hold the GET stream for unsolicited messages; a 405 means the upstream has none."""
        delay = 0.5
        cursor = _Cursor()  # re-opened with Last-Event-ID, so what it sent while we were away is not lost
        while not self._closed:
            headers = {**self._headers, "Accept": "text/event-stream"}
            headers.pop("Content-Type", None)
            resumed = cursor.last_id
            if resumed is not None:
                headers["Last-Event-ID"] = resumed
            try:
                async with self._http.get(self.url, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=None, sock_connect=5)) as resp:
                    if resp.status == 405:
                        return
                    if resp.status == 404:  # the upstream restarted and forgot us: reconnect now
                        self._lost("upstream session expired (HTTP 404 on the GET stream)")
                        return
                    if resp.status == 200:
                        delay = 0.5
                        await self._read_events(resp.content, None, cursor)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError) as exc:
                log.debug("GET stream of %s: %s", self.url, exc)
            if resumed is not None and cursor.last_id == resumed:
                cursor.last_id = None  # the id led nowhere (refused, or nothing new): open a fresh stream next
            await asyncio.sleep(cursor.retry_ms / 1000 if cursor.retry_ms is not None and delay == 0.5 else delay)
            delay = min(delay * 2, 10.0)

    def _lost(self, reason: str) -> None:
        if not self._closed and self._on_closed is not None:
            self._closed = True
            self._on_closed(reason)

    async def close(self) -> None:
        was_open = not self._closed
        self._closed = True
        if self._get_task is not None:
            self._get_task.cancel()
        if was_open and self._session_id is not None:
            try:  # end the upstream session politely; it may already be gone
                async with self._http.delete(self.url, headers=self._headers, timeout=aiohttp.ClientTimeout(total=2)):
                    pass
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass


async def _lines(chunks: Any) -> Any:
    """Split a stream of body chunks into lines (each ending in its newline, like aiohttp's)."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line + b"\n"
    if pending:
        yield pending
