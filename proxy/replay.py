"""SSE event ids and the bounded replay buffers behind ``Last-Event-ID`` resumption (session revisions).

Every event the proxy writes on a session's SSE stream carries an id ``<kind><stream>-<seq>``:
``p`` for a POST answer that turned into a stream, ``g`` for a GET stream, the stream's number
within the session, then the event's number within the stream. So an id names its stream, as
the 2025-11-25 transport asks, and is unique within the session. The events are kept, newest
last, so a client that lost its connection can GET the endpoint with ``Last-Event-ID`` and be
sent what followed on that stream only (``proxy/resume.py``).

Memory is bounded twice, oldest events evicted first: per session (``replay_buffer_bytes``)
and over all sessions (``replay_total_bytes``; the least recently written session loses its
oldest events first). An id whose successors were evicted can no longer be resumed; the
front answers that with an error instead of a stream with a silent gap. 2026-07-28 has no
resumption: its streams get neither ids nor buffers.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import orjson

from only1mcp.settings import ProxySettings

__all__ = ["ReplayBudget", "SessionReplay", "StreamLog", "encode_event", "priming_event", "parse_event_id",
           "RETRY_MS", "PRIMING_SINCE"]

RETRY_MS = 1000  # the SSE retry field sent with the priming event: how long a client waits to reconnect
PRIMING_SINCE = "2025-11-25"  # the first revision whose clients expect an empty priming event (SEP-1699)
_EVENT_OVERHEAD = 96  # bytes a retained event costs beyond its text (tuple, deque slots, the order entry)


def encode_event(message: Any, event_id: str | None) -> bytes:
    head = b"event: message\nid: " + event_id.encode() + b"\n" if event_id is not None else b"event: message\n"
    return head + b"data: " + orjson.dumps(message) + b"\n\n"


def priming_event(event_id: str) -> bytes:
    """An id and empty data: the client holds a cursor before any message (and learns when to reconnect)."""
    return b"id: " + event_id.encode() + b"\nretry: " + str(RETRY_MS).encode() + b"\ndata: \n\n"


def parse_event_id(raw: bytes) -> tuple[str, int, int] | None:
    """(kind, stream, seq) of an id the proxy wrote, or None."""
    stream, sep, seq = raw[1:].partition(b"-")
    if raw[:1] not in (b"p", b"g") or not sep or not stream.isdigit() or not seq.isdigit() or len(raw) > 40:
        return None
    return raw[:1].decode(), int(stream), int(seq)


class StreamLog:
    """One SSE stream of a session: its id counter and the events still retained for replay."""

    __slots__ = ("number", "kind", "events", "last_seq", "evicted_upto", "finished", "exchange", "owner",
                 "_replay", "_changed")

    def __init__(self, number: int, kind: str, replay: SessionReplay) -> None:
        self.number, self.kind = number, kind  # kind: "post" (a request's answer) or "get"
        self.events: deque[tuple[int, bytes]] = deque()
        self.last_seq = 0
        self.evicted_upto = 0  # events up to this seq are gone: an older Last-Event-ID cannot be resumed
        self.finished = False  # nothing more will come: a POST stream's answer is in, a GET stream's connection ended
        self.exchange: Any = None  # the Exchange still producing this POST stream, if any
        self.owner: object | None = None  # the connection writing the stream now; a resume takes it over
        self._replay = replay
        self._changed: asyncio.Future[None] | None = None

    def next_id(self) -> tuple[int, str]:
        self.last_seq += 1
        return self.last_seq, f"{self.kind[0]}{self.number}-{self.last_seq}"

    def append(self, message: Any) -> bytes:
        """The message as an event with the stream's next id, retained for replay."""
        seq, event_id = self.next_id()
        data = encode_event(message, event_id)
        self._replay.retain(self, seq, data)
        self._wake()
        return data

    def after(self, seq: int) -> list[tuple[int, bytes]] | None:
        """The retained events after ``seq``; None if ``seq`` is not this stream's or events after it were evicted."""
        if seq > self.last_seq or seq < self.evicted_upto:
            return None
        return [(s, data) for s, data in self.events if s > seq]

    def finish(self) -> None:
        self.finished, self.exchange = True, None
        self._wake()
        self._replay.forget_if_spent(self)

    def claim(self) -> object:
        """Make a new connection the stream's writer; the previous one stops at its next wake-up."""
        self.owner = token = object()
        self._wake()
        return token

    def changed(self) -> asyncio.Future[None]:
        """Resolved at the next append, finish, claim or session end."""
        if self._changed is None or self._changed.done():
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    def _wake(self) -> None:
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)


class SessionReplay:
    """A session's streams and their retained events, in the order they were written."""

    def __init__(self, budget: ReplayBudget) -> None:
        self.budget = budget
        self.streams: dict[int, StreamLog] = {}
        self.order: deque[tuple[StreamLog, int]] = deque()  # (stream, size) of each retained event, oldest first
        self.bytes = 0
        self.closed = False
        self._numbers = 0

    def open(self, kind: str) -> StreamLog:
        self._numbers += 1
        stream = self.streams[self._numbers] = StreamLog(self._numbers, kind, self)
        return stream

    def retain(self, stream: StreamLog, seq: int, data: bytes) -> None:
        if self.closed:
            return
        size = len(data) + _EVENT_OVERHEAD
        stream.events.append((seq, data))
        self.order.append((stream, size))
        self.bytes += size
        limit = self.budget.current().replay_buffer_bytes
        while self.bytes > limit and self.order:
            self.evict_oldest()
        self.budget.charge(self, size)

    def evict_oldest(self) -> None:
        # Streams are written in order and evicted oldest first, so the oldest entry of the session
        # is also the oldest event of its stream.
        stream, size = self.order.popleft()
        seq, _ = stream.events.popleft()
        stream.evicted_upto = seq
        self.bytes -= size
        self.budget.bytes -= size
        self.forget_if_spent(stream)

    def forget_if_spent(self, stream: StreamLog) -> None:
        """A finished stream with nothing left to replay is dropped (its ids then answer as unknown)."""
        if stream.finished and not stream.events and stream.owner is None:
            self.streams.pop(stream.number, None)

    def release(self, stream: StreamLog, token: object) -> None:
        """The connection ``token`` stopped writing ``stream``."""
        if stream.owner is token:
            stream.owner = None
            if stream.kind == "get":
                stream.finished = True  # still resumable; nothing is written to it until then
            self.forget_if_spent(stream)

    def clear(self) -> None:
        """The session ended: free everything and wake whatever still follows a stream."""
        self.closed = True
        self.budget.bytes -= self.bytes
        self.budget.drop(self)
        self.order.clear()
        self.bytes = 0
        for stream in self.streams.values():
            stream.events.clear()
            stream.evicted_upto = stream.last_seq + 1  # nothing can be resumed any more
            stream.finished = True
            stream._wake()
        self.streams.clear()


class ReplayBudget:
    """The bound over all sessions; ``current()`` follows reloads."""

    def __init__(self, current: Callable[[], ProxySettings]) -> None:
        self.current = current
        self.bytes = 0
        self._sessions: OrderedDict[SessionReplay, None] = OrderedDict()  # least recently written first

    def enabled(self) -> bool:
        settings = self.current()
        return settings.replay_buffer_bytes > 0 and settings.replay_total_bytes > 0

    def charge(self, replay: SessionReplay, size: int) -> None:
        self.bytes += size
        sessions = self._sessions
        sessions[replay] = None
        sessions.move_to_end(replay)
        limit = self.current().replay_total_bytes
        while self.bytes > limit and sessions:
            oldest = next(iter(sessions))
            if oldest.order:
                oldest.evict_oldest()
            else:
                del sessions[oldest]

    def drop(self, replay: SessionReplay) -> None:
        self._sessions.pop(replay, None)

    def __len__(self) -> int:
        return len(self._sessions)
