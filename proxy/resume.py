"""GET at the HTTP front: a session's stream of unsolicited messages, or a stream resumed with ``Last-Event-ID``.

A GET without ``Last-Event-ID`` opens a new GET stream: the session's queued messages
(``ClientSession.outbox``) are written as they come, each logged under the stream's next id
(``proxy/replay.py``); a 2025-11-25 session's stream starts with a priming event.

A GET with ``Last-Event-ID`` resumes the stream that id belongs to, and only that one:

- a POST answer's stream: the events after the id are replayed, then the stream is followed
  live until its answer has been written (the call was never cancelled by the disconnect; a
  connection still writing the stream is ended, so no message goes out twice);
- a GET stream: the events after the id are replayed, then it goes on as a GET stream.

If the events after the id are no longer buffered (evicted by ``replay_buffer_bytes`` /
``replay_total_bytes``), or the id is not one of this session's: for a POST answer's stream,
400 with -32600 (its answer cannot be delivered any more, and the client had better know at
once than wait for its timeout); for a GET stream, a new GET stream whose first line is a
comment saying so (its lost messages were notifications the client can recover by listing
again). Each such answer is counted as ``resume_unavailable`` at ``/metrics``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from only1mcp.errors import INVALID_REQUEST
from only1mcp.proxy.exchange import SSE_HEADERS, close_stream, event, respond, rpc_error
from only1mcp.proxy.limits import Limits
from only1mcp.proxy.replay import PRIMING_SINCE, ReplayBudget, SessionReplay, StreamLog, parse_event_id, priming_event

__all__ = ["GetStreams", "KEEPALIVE_S"]

KEEPALIVE_S = 15.0


class GetStreams:
    def __init__(self, limits: Limits, budget: ReplayBudget) -> None:
        self.limits, self.budget = limits, budget
        self._held: set[asyncio.Future[None]] = set()  # the disconnect watch of every stream held open

    def close_all(self) -> None:
        """End every held stream (the server is shutting down: uvicorn would wait for them for ever).
        Their clients resume elsewhere, or here after a restart, with Last-Event-ID."""
        for watch in list(self._held):
            watch.cancel()

    def _watch(self, receive: Any) -> asyncio.Future[None]:
        watch = asyncio.ensure_future(_disconnected(receive))
        self._held.add(watch)
        watch.add_done_callback(self._held.discard)
        return watch

    def replay_of(self, session: Any) -> SessionReplay | None:
        """The session's replay buffers (made on first use); None when resumption is off or the session ended."""
        if session.ended or not self.budget.enabled():
            return None
        if session.replay is None:
            session.replay = SessionReplay(self.budget)
        return session.replay

    async def handle(self, session: Any, headers: dict[bytes, bytes], receive: Any, send: Any) -> None:
        streams = self.replay_of(session)
        last = headers.get(b"last-event-id")
        if last is None:
            await self._get(session, streams, None, 0, [], receive, send)
            return
        parsed = parse_event_id(last.strip())
        stream = streams.streams.get(parsed[1]) if streams is not None and parsed is not None else None
        events = stream.after(parsed[2]) if stream is not None and parsed and stream.kind[0] == parsed[0] else None
        if events is None:
            self.limits.refused["resume_unavailable"] += 1
            shown = last[:40].decode("latin-1")
            if parsed is None or parsed[0] == "p":
                await respond(send, 400, rpc_error(INVALID_REQUEST, f"Bad Request: Last-Event-ID {shown!r} cannot be "
                                                   "resumed: not an event of this session, or the events after it "
                                                   "are no longer buffered (replay_buffer_bytes)"))
                return
            note = f": Last-Event-ID {shown!r} cannot be resumed (events no longer buffered); a new stream\n\n"
            await self._get(session, streams, None, 0, [], receive, send, note.encode("latin-1"))
        elif stream.kind == "post":  # type: ignore[union-attr]
            await self._follow(stream, parsed[2], events, streams, receive, send)  # type: ignore[arg-type,index]
        else:
            await self._get(session, streams, stream, parsed[2], events, receive, send)  # type: ignore[index]

    async def _get(self, session: Any, streams: SessionReplay | None, stream: StreamLog | None, cursor: int,
                   backlog: list[tuple[int, bytes]], receive: Any, send: Any, note: bytes = b"") -> None:
        first = b": stream open\n\n" + note
        if streams is not None and stream is None:
            stream = streams.open("get")
            if session.protocol_version >= PRIMING_SINCE:
                cursor, event_id = stream.next_id()
                first += priming_event(event_id)
        token = stream.claim() if stream is not None else None
        if stream is not None:
            stream.finished = False
        if backlog:
            first += b"".join(data for _, data in backlog)
            cursor = backlog[-1][0]
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        disconnect = self._watch(receive)
        write = self.limits.write  # a client that stops reading loses the stream (the outbox is bounded)
        try:
            if not await write(send, first):
                return  # the server closes the connection
            while not disconnect.done():
                if stream is not None:
                    if stream.owner is not token:
                        break  # resumed on another connection, which goes on from here
                    if stream.last_seq != cursor:  # appended by a connection this one took over from
                        missed = stream.after(cursor)
                        if missed is None or not await write(send, b"".join(data for _, data in missed)):
                            break
                        cursor = stream.last_seq
                getter = asyncio.ensure_future(session.outbox.get())
                waits = {getter, disconnect, stream.changed()} if stream is not None else {getter, disconnect}
                done, _ = await asyncio.wait(waits, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED)
                if getter in done:
                    message = getter.result()
                    if stream is None:
                        data = event(message)
                    else:  # logged even if this connection was just taken over: the new one writes it
                        data = stream.append(message)
                        if stream.owner is not token:
                            break
                        cursor = stream.last_seq
                    if not await write(send, data):
                        return
                else:
                    getter.cancel()  # an item it had not returned stays queued
                    if not done and not await write(send, b": keepalive\n\n"):
                        return
        except OSError:
            pass
        finally:
            disconnect.cancel()
            if stream is not None:
                streams.release(stream, token)  # type: ignore[union-attr]
        await close_stream(send, self.limits)

    async def _follow(self, stream: StreamLog, cursor: int, backlog: list[tuple[int, bytes]] | None,
                      streams: SessionReplay, receive: Any, send: Any) -> None:
        """Replay a POST answer's stream after ``cursor``, then follow it until its answer is written."""
        if stream.exchange is not None:
            stream.exchange.detach()
        token = stream.claim()
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        disconnect = self._watch(receive)
        write = self.limits.write
        try:
            while True:
                if backlog is None:
                    break  # evicted before it could be written: the client may resume from its last id
                if backlog:
                    if not await write(send, b"".join(data for _, data in backlog)):
                        return
                    cursor = backlog[-1][0]
                if stream.finished and cursor >= stream.last_seq:
                    break  # the answer is written: the stream ends
                if stream.owner is not token or disconnect.done():
                    break
                if stream.last_seq == cursor:  # nothing new since the write: wait for it (a wake-up during
                    # the write is already spent, so the count, not the future, says whether to wait)
                    done, _ = await asyncio.wait({stream.changed(), disconnect}, timeout=KEEPALIVE_S,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if not done and not await write(send, b": keepalive\n\n"):
                        return
                backlog = stream.after(cursor)
                if backlog == []:
                    cursor = stream.last_seq  # only ids never logged lie between (the priming event's)
        except OSError:
            pass
        finally:
            disconnect.cancel()
            streams.release(stream, token)
        await close_stream(send, self.limits)


async def _disconnected(receive: Any) -> None:
    """Returns when the client has gone. A GET's first message is its (empty) request body, not a
    disconnect: taking that for one would end every GET stream as soon as it started."""
    while (await receive()).get("type") != "http.disconnect":
        pass
