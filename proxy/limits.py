"""What the front needs to bound a client that floods or stalls: deadlines on body reads and stream
writes, and the refusal every limit answers with.

:class:`Watchdog` keeps one coarse timer for the whole process instead of one per request: a
request arms it with its task and a deadline (a dict entry), disarms it when done, and a
sweep every ``tick`` seconds cancels the tasks past theirs. The task catches the
cancellation, asks :meth:`Watchdog.fired` whether it was the watchdog's, and answers (408, a
closed stream) instead of dying. So the happy path costs a dict insert and a pop; a deadline
is honoured to within one tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable
from typing import Any

import orjson

from only1mcp.settings import ProxySettings

__all__ = ["Watchdog", "Limits", "refuse", "REFUSALS", "TICK_S"]

TICK_S = 0.25


class Watchdog:
    def __init__(self, tick: float = TICK_S) -> None:
        self.tick = tick
        self._due: dict[asyncio.Task[Any], float] = {}
        self._fired: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def arm(self, seconds: float) -> asyncio.Task[Any]:
        """Cancel the current task if it is still armed ``seconds`` from now; returns the task."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        if loop is not self._loop:  # a new event loop (tests run several): nothing old applies
            self._loop, self._timer = loop, None
            self._due.clear()
            self._fired.clear()
        self._due[task] = loop.time() + seconds
        if self._timer is None:
            self._timer = loop.call_later(self.tick, self._sweep)
        return task

    def disarm(self, task: asyncio.Task[Any]) -> None:
        self._due.pop(task, None)

    def fired(self, task: asyncio.Task[Any]) -> bool:
        """Whether the watchdog cancelled ``task`` (then the cancellation is taken back: the task answers)."""
        if task in self._fired:
            self._fired.discard(task)
            task.uncancel()
            return True
        return False

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for task in [t for t, due in self._due.items() if due <= now]:
            del self._due[task]
            if not task.done():
                self._fired.add(task)
                task.cancel()
        self._timer = loop.call_later(self.tick, self._sweep) if self._due else None

    def __len__(self) -> int:
        return len(self._due)


async def refuse(send: Any, status: int, code: int, message: str, request_id: Any = None,
                 retry_after: int | None = None, close: bool = False) -> None:
    """Answer HTTP ``status`` with a JSON-RPC error; ``Retry-After`` if given; ``Connection: close`` if asked."""
    error: dict[str, Any] = {"code": code, "message": message}
    headers = [(b"content-type", b"application/json")]
    if retry_after is not None:
        error["data"] = {"retryAfter": retry_after}
        headers.append((b"retry-after", str(retry_after).encode()))
    if close:
        headers.append((b"connection", b"close"))
    body = orjson.dumps({"jsonrpc": "2.0", "id": request_id, "error": error})
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# What the front refuses, by limit (the session caps are counted by the session store).
REFUSALS = ("body_timeout", "body_too_large", "inflight_session", "inflight_client", "stream_overrun",
            "stream_write_timeout", "resume_unavailable")


class Limits:
    """The front's limits in force (``current()`` follows reloads), its watchdog, and its refusal counts."""

    def __init__(self, current: Callable[[], ProxySettings]) -> None:
        self.current = current
        self.watchdog = Watchdog()
        self.refused = dict.fromkeys(REFUSALS, 0)

    async def write(self, send: Any, body: bytes, more_body: bool = True) -> bool:
        """One write of a stream, given at most ``stream_write_timeout`` to get past a client that does not
        read; False if it did not (the stream is then to be abandoned: the server closes the connection)."""
        watchdog = self.watchdog
        task = watchdog.arm(self.current().stream_write_timeout)
        try:
            await send({"type": "http.response.body", "body": body, "more_body": more_body})
        except asyncio.CancelledError:
            if not watchdog.fired(task):
                raise
            self.refused["stream_write_timeout"] += 1
            return False
        finally:
            watchdog.disarm(task)
        return True


def head_timeout_protocol(seconds: float, tick: float = TICK_S, send_buffer_bytes: int = 0) -> type:
    """uvicorn's httptools protocol with a deadline for the request head, which uvicorn lacks: a connection
    that has not sent a complete request line and headers ``seconds`` after it opened (or after its
    previous answer) is closed. uvicorn's own ``timeout_keep_alive`` (5 s) still closes idle kept-alive
    connections first; this catches the ones that send a few header bytes and stall (slowloris).

    ``send_buffer_bytes`` (> 0) caps each connection's kernel send buffer, so what a client leaves unread
    is bounded by the proxy's own stream limits plus a known kernel share, not megabytes of autotuning.

    As the watchdog: one sweep every ``tick`` seconds over a dict of deadlines, so a request costs a
    dict insert and pop, not a timer."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    due: dict[Any, float] = {}
    timer: list[asyncio.TimerHandle | None] = [None]

    def sweep() -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        for protocol in [p for p, deadline in due.items() if deadline <= now]:
            del due[protocol]
            protocol.head_expired()
        timer[0] = loop.call_later(tick, sweep) if due else None

    class HeadTimeoutProtocol(HttpToolsProtocol):
        def _arm_head(self) -> None:
            due[self] = self.loop.time() + seconds
            if timer[0] is None:
                timer[0] = self.loop.call_later(tick, sweep)

        def head_expired(self) -> None:
            idle = self.cycle is None or self.cycle.response_complete
            if idle and not self.pipeline and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            if send_buffer_bytes > 0:
                sock = transport.get_extra_info("socket")
                if sock is not None and sock.family != socket.AF_UNIX:
                    with contextlib.suppress(OSError):  # a socket that refuses keeps the kernel's default
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer_bytes)
            super().connection_made(transport)
            self._arm_head()

        def on_headers_complete(self) -> None:
            due.pop(self, None)
            super().on_headers_complete()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.pipeline and not self.transport.is_closing():
                self._arm_head()

        def connection_lost(self, exc: Exception | None) -> None:
            due.pop(self, None)
            super().connection_lost(exc)

    return HeadTimeoutProtocol
