"""Streamable HTTP transport to one upstream replica, over a pooled aiohttp session.

Every request is one POST; its reply is JSON or an SSE stream that may carry
notifications and server-to-client requests before the response, all delivered
with the id of the request they belong to. Unsolicited messages arrive on the GET
stream, which is re-opened while the session lives.
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

    async def start(self, deliver: Deliver, on_closed: Callable[[str], None]) -> None:
        self._deliver, self._on_closed = deliver, on_closed

    def initialized(self, protocol_version: str) -> None:
        self._headers["MCP-Protocol-Version"] = protocol_version
        if self._listen_for_unsolicited:
            self._get_task = asyncio.get_running_loop().create_task(self._listen())

    async def send(self, message: dict[str, Any], headers: Mapping[str, str] | None = None) -> None:
        assert self._deliver is not None
        related = message.get("id") if "method" in message else None
        merged = {**self._headers, **headers} if headers else self._headers
        if self._fast is not None:
            await self._send_fast(message, related, merged)
            return
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
                    await self._read_events(resp.content, related)
                else:
                    body = await resp.read()
                    if body:
                        self._deliver_payload(body, related)
        except (aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}".rstrip(": ")
            self._lost(reason)
            raise TransportClosed(reason) from exc

    async def _send_fast(self, message: dict[str, Any], related: Any, headers: Mapping[str, str]) -> None:
        try:
            resp = await self._fast.post(self.url, orjson.dumps(message), headers)  # type: ignore[union-attr]
        except Http1Error as exc:
            self._lost(str(exc))
            raise TransportClosed(str(exc)) from exc
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
                await self._read_events(_lines(resp.chunks()), related)
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

    async def _read_events(self, content: Any, related: Any) -> None:
        data: list[bytes] = []
        async for line in content:
            line = line.rstrip(b"\r\n")
            if not line:
                if data:
                    self._deliver_payload(b"\n".join(data), related)
                    data.clear()
            elif line.startswith(b"data:"):
                data.append(line[5:].lstrip(b" ") if line[5:6] == b" " else line[5:])
        if data:
            self._deliver_payload(b"\n".join(data), related)

    def _deliver_payload(self, payload: bytes, related: Any) -> None:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError:
            # Its size only: the bytes may be a (broken) result, which logs never carry.
            log.warning("%s sent a message that is not JSON (%d bytes)", redact_url(self.url), len(payload))
            return
        for item in message if isinstance(message, list) else [message]:
            if isinstance(item, dict):
                self._deliver(item, related)  # type: ignore[misc]

    async def _listen(self) -> None:
        """Hold the GET stream for unsolicited messages; a 405 means the upstream has none."""
        delay = 0.5
        while not self._closed:
            headers = {**self._headers, "Accept": "text/event-stream"}
            headers.pop("Content-Type", None)
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
                        await self._read_events(resp.content, None)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError) as exc:
                log.debug("GET stream of %s: %s", self.url, exc)
            await asyncio.sleep(delay)
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
