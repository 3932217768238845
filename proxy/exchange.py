"""One request's answer at the HTTP front: JSON if nothing came before it, else an SSE stream.

In a session revision the stream is also logged for ``Last-Event-ID`` resumption
(``proxy/replay.py``): its events carry ids, a 2025-11-25 session's stream opens with a
priming event (an id, the retry delay, empty data), and a client that resumes the stream
elsewhere takes it over: this connection is ended and the answer goes to the log, which the
resumed connection follows (``proxy/resume.py``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from only1mcp.errors import STREAM_OVERRUN
from only1mcp.proxy.limits import Limits
from only1mcp.proxy.replay import SessionReplay, StreamLog, encode_event, priming_event

__all__ = ["Exchange", "event", "respond", "close_stream", "rpc_error", "SSE_HEADERS", "CANCELLED"]

log = logging.getLogger("only1mcp.http")

_JSON = (b"content-type", b"application/json")
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
               (b"x-accel-buffering", b"no")]
CANCELLED = -32800  # the answer a cancelled request gets, if the client still listens


def rpc_error(code: int, message: str, request_id: Any = None) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def event(message: dict[str, Any]) -> bytes:
    """An SSE event without an id (2026-07-28 streams, which are not resumable)."""
    return encode_event(message, None)


async def respond(send: Any, status: int, payload: Any, extra: list[tuple[bytes, bytes]] | None = None) -> int:
    body = orjson.dumps(payload)
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if extra:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    return len(body)


async def close_stream(send: Any, limits: Limits | None = None) -> None:
    """End a stream's response; a client that does not read gets at most ``stream_write_timeout``."""
    try:
        if limits is not None:
            await limits.write(send, b"", more_body=False)
        else:
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    except OSError:
        pass


class Exchange:
    """One request's answer: JSON if nothing came before it, else an SSE stream.

    Messages for the stream are encoded as they come and queued until written; with ``limits``,
    a client that leaves more than ``max_stream_buffer_bytes`` unread (queued or being written)
    loses the call (cancelled upstream, the queue freed, a final ``STREAM_OVERRUN`` error if it
    still reads it), and a write stuck past ``stream_write_timeout`` abandons the stream. With
    ``streams`` (a session's replay buffers) the stream's events are logged under ids."""

    def __init__(self, send: Any, sse: bool, headers: list[tuple[bytes, bytes]] | None = None,
                 prefer_sse: bool = False, limits: Limits | None = None, streams: SessionReplay | None = None,
                 prime: bool = False) -> None:
        self.send, self.sse, self.headers = send, sse, headers or []
        self.prefer_sse = prefer_sse  # the client listed SSE first in Accept: answer as a stream
        self.queue: list[bytes] = []  # encoded events not written yet
        self.queued = 0  # their bytes
        self.writing = 0  # bytes of the write in progress
        self.started = False
        self.reply: Any = None  # the final answer, for the request's event
        self.sent_bytes = 0
        self.limits = limits
        self.overrun = False  # the client left too much unread: the call was given up
        self.abandoned = False  # a write did not get through in time: the stream is dropped
        self.detached = False  # the client resumed the stream on another connection
        self.streams, self.prime = streams, prime
        self.stream: StreamLog | None = None
        self._opened = False
        self._task: asyncio.Task[Any] | None = None
        self._waiter: asyncio.Future[None] | None = None

    def _open(self) -> None:
        """The answer becomes a stream: in a session with replay buffers it gets a log (and a priming event)."""
        self._opened = True
        if self.streams is None or self.streams.closed or not self.streams.budget.enabled():
            return
        stream = self.stream = self.streams.open("post")
        stream.exchange = stream.owner = self
        if self.prime:
            _, event_id = stream.next_id()
            data = priming_event(event_id)
            self.queue.insert(0, data)
            self.queued += len(data)

    def _encode(self, message: dict[str, Any]) -> bytes:
        if not self._opened:
            self._open()
        return self.stream.append(message) if self.stream is not None else event(message)

    def push(self, message: dict[str, Any]) -> None:
        if self.overrun:
            return
        data = self._encode(message)
        if self.detached:
            return  # in the log: the connection that resumed the stream follows it from there
        self.queue.append(data)
        self.queued += len(data)
        limits = self.limits
        if limits is not None and self.queued + self.writing > limits.current().max_stream_buffer_bytes:
            self._give_up(limits)
        self._wake()

    def detach(self) -> None:
        """The client resumed this stream with ``Last-Event-ID``: stop writing here (the log has it all)."""
        self.detached = True
        self.queue, self.queued = [], 0
        self._wake()

    def _give_up(self, limits: Limits) -> None:
        """Too much unread: free the queue and cancel the call (the upstream gets notifications/cancelled)."""
        self.overrun = True
        log.warning("a client left %d bytes of an SSE answer unread (max_stream_buffer_bytes): call cancelled",
                    self.queued + self.writing)
        self.queue, self.queued = [], 0
        limits.refused["stream_overrun"] += 1
        if self._task is not None:
            self._task.cancel()

    def _wake(self, *_: Any) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def run(self, handler: Any, receive: Any, session: Any, request_id: Any,
                  finish: Any = None, cancel_on_disconnect: bool = False) -> None:
        """Answer one request. Only the stateless revision treats a closed stream as a cancel;
        the session revisions say a disconnect is not one, so there the socket is not watched."""
        loop = asyncio.get_running_loop()
        task = self._task = loop.create_task(handler)
        task.add_done_callback(self._wake)
        disconnect = None
        if cancel_on_disconnect:
            disconnect = loop.create_task(receive())
            disconnect.add_done_callback(self._wake)
        if session is not None:
            session.calls[request_id] = task
            session.inflight += 1
        try:
            await self._answer(task, disconnect, request_id, finish)
        finally:
            if disconnect is not None:
                disconnect.cancel()
            if session is not None:
                session.calls.pop(request_id, None)
                session.inflight -= 1
            if self.stream is not None:
                self.stream.finish()
                self.streams.release(self.stream, self)  # type: ignore[union-attr]

    async def _answer(self, task: asyncio.Task[Any], disconnect: Any, request_id: Any, finish: Any) -> None:
        loop = asyncio.get_running_loop()
        old_closed = False
        while True:
            if self.detached:
                if self.started and not old_closed and not self.abandoned:  # the client left it for the resumed one
                    old_closed = True
                    await close_stream(self.send, self.limits)
            elif self.queue and not await self._flush() and not self.detached:
                break
            if task.done() or self.overrun or (disconnect is not None and disconnect.done()):
                break
            self._waiter = loop.create_future()
            await self._waiter
        if not self.detached and (self.abandoned or (not task.done() and not self.overrun)):
            # The client went away, or stopped reading: closing the stream cancels the call.
            if self.stream is not None:  # a client that resumes the stream learns how the call ended
                self.stream.append(task.result() if task.done() and not task.cancelled() else rpc_error(
                    STREAM_OVERRUN, "Stream dropped: a write waited longer than stream_write_timeout, so the "
                    "call was cancelled", request_id))
            task.cancel()
            if self.started and not self.abandoned:
                await close_stream(self.send)
            return  # abandoned: the response stays incomplete, so the server closes the connection
        if self.overrun:
            reply = rpc_error(STREAM_OVERRUN, "Stream overrun: the client did not read its SSE stream; more "
                              "than max_stream_buffer_bytes were waiting, so the call was cancelled", request_id)
        elif task.cancelled():
            reply = rpc_error(CANCELLED, "Request cancelled", request_id)
        else:
            reply = task.result()
        status = 200
        if finish is not None:
            status, reply = finish(reply)
        self.reply = reply
        if self.detached:
            self._encode(reply)  # the resumed connection writes it
            return
        if self.prefer_sse and not self.started and status == 200:
            if not self._opened:
                self._open()
            if not await self._flush():
                return
        if self.started:
            body = self._encode(reply)
            self.sent_bytes += len(body)
            if self.limits is not None:
                await self.limits.write(self.send, body, more_body=False)
            else:
                await self.send({"type": "http.response.body", "body": body, "more_body": False})
        else:
            self.sent_bytes += await respond(self.send, status, reply, self.headers)

    async def _flush(self) -> bool:
        """Write what is queued; False if the client did not take it in time (the stream is abandoned)."""
        if not self.started:
            self.started = True
            await self.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + self.headers})
        body = b"".join(self.queue)
        self.queue, self.queued = [], 0
        self.sent_bytes += len(body)
        if self.limits is None:
            await self.send({"type": "http.response.body", "body": body, "more_body": True})
            return True
        self.writing = len(body)
        try:
            if await self.limits.write(self.send, body):
                return True
        finally:
            self.writing = 0
        self.abandoned = True
        return False
