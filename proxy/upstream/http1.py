"""A small HTTP/1.1 client for the hot path: keep-alive connections to plain-http upstreams.

Each tools/call is one POST to an upstream over a connection that stays open. A
general client (aiohttp) spends more CPU per request than the rest of the proxy
together, so POSTs to ``http://`` upstreams go through this pool: requests are
written as bytes, responses parsed by httptools (the parser uvicorn uses), and the
body handed over chunk by chunk so SSE events reach the client as they arrive.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

__all__ = ["Http1Pool", "Http1Response", "Http1Error"]

_IDLE_LIMIT_S = 4.0  # below uvicorn's default keep-alive of 5 s: never reuse a socket the server is closing


class Http1Error(Exception):
    """The connection failed; ``sent`` says whether any response byte had arrived."""

    def __init__(self, message: str, answered: bool) -> None:
        super().__init__(message)
        self.answered = answered


class Http1Response:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.head: asyncio.Future[None] = loop.create_future()
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self._chunks: collections.deque[bytes] = collections.deque()
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._loop = loop
        self._conn: _Connection | None = None

    def close(self) -> None:
        """Abandon the body: the connection is closed, since it cannot carry another request."""
        if self._conn is not None and not self._done:
            self._conn._die(Http1Error("abandoned by the proxy", True))

    def header(self, name: str) -> str | None:
        value = self.headers.get(name.encode())
        return value.decode("latin-1") if value is not None else None

    @property
    def content_type(self) -> str:
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, exc: BaseException) -> None:
        self._error = exc
        if not self.head.done():
            self.head.set_exception(exc)
        self._wake()

    async def chunks(self) -> AsyncIterator[bytes]:
        while True:
            while self._chunks:
                yield self._chunks.popleft()
            if self._error is not None:
                raise self._error
            if self._done:
                return
            self._waiter = self._loop.create_future()
            await self._waiter

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks()])


class _Connection(asyncio.Protocol):
    def __init__(self, pool: _OriginPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: Http1Response | None = None
        self.answered = False
        self.alive = True
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._die(Http1Error(f"invalid HTTP response: {exc}", True))

    def connection_lost(self, exc: Exception | None) -> None:
        self._die(Http1Error(f"connection closed{f': {exc}' if exc else ''}", self.answered))

    def _die(self, error: Http1Error) -> None:
        self.alive = False
        if self.transport is not None:
            self.transport.close()
        if self.response is not None:
            self.response._fail(error)
            self.response = None

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if self.response is not None:
            self.response.headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        response = self.response
        if response is not None:
            response.status = self.parser.get_status_code()
            self.alive = self.parser.should_keep_alive()
            if not response.head.done():
                response.head.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response._feed(body)

    def on_message_complete(self) -> None:
        response, self.response = self.response, None
        if response is not None:
            response._finish()
        if self.alive:
            self.pool.release(self)
        elif self.transport is not None:
            self.transport.close()


class _OriginPool:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.idle: list[_Connection] = []

    async def acquire(self, connect_timeout: float) -> tuple[_Connection, bool]:
        now = time.monotonic()
        while self.idle:
            conn = self.idle.pop()
            if conn.alive and now - conn.idle_since < _IDLE_LIMIT_S:
                return conn, True
            if conn.transport is not None:
                conn.transport.close()
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(connect_timeout):
                _, conn = await loop.create_connection(lambda: _Connection(self), self.host, self.port)
        except (OSError, TimeoutError) as exc:
            raise Http1Error(f"cannot connect to {self.host}:{self.port}: {exc or type(exc).__name__}", False) from exc
        return conn, False

    def release(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        conn.answered = False
        self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            if conn.transport is not None:
                conn.transport.close()
        self.idle.clear()


class Http1Pool:
    """Keep-alive connections per origin, for ``http://`` URLs."""

    def __init__(self, connect_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self._origins: dict[tuple[str, int], _OriginPool] = {}

    @staticmethod
    def supports(url: str) -> bool:
        return url.startswith("http://")

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> Http1Response:
        """Send a POST; return once the response head arrived (the body streams after)."""
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        origin = self._origins.get((host, port))
        if origin is None:
            origin = self._origins[(host, port)] = _OriginPool(host, port)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = [f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Length: {len(body)}\r\n"]
        head.extend(f"{k}: {v}\r\n" for k, v in headers.items())
        payload = "".join(head).encode("latin-1") + b"\r\n" + body
        for attempt in (1, 2):
            conn, reused = await origin.acquire(self.connect_timeout)
            response = Http1Response(asyncio.get_running_loop())
            conn.response, response._conn = response, conn
            assert conn.transport is not None
            conn.transport.write(payload)
            try:
                await response.head
                return response
            except Http1Error as exc:
                # A reused socket the server had closed: nothing was processed, send it again once.
                if attempt == 1 and reused and not exc.answered:
                    continue
                raise
            except asyncio.CancelledError:
                conn._die(Http1Error("cancelled", True))
                raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        for origin in self._origins.values():
            origin.close()
        self._origins.clear()
