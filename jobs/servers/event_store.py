"""A bounded in-memory event store, so a fixture's SSE streams can be resumed with ``Last-Event-ID``.

The mcp SDK's Streamable HTTP server stores every event it sends through an ``EventStore``
(and only then sends priming events and lets a tool close its stream mid-call, SEP-1699);
this one keeps the newest ``capacity`` events of all streams in memory, so a long-lived
fixture does not grow without end.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage

__all__ = ["MemoryEventStore"]


class MemoryEventStore(EventStore):
    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._events: OrderedDict[EventId, tuple[StreamId, JSONRPCMessage | None]] = OrderedDict()
        self._ids = itertools.count(1)

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = str(next(self._ids))
        self._events[event_id] = (stream_id, message)
        while len(self._events) > self.capacity:
            self._events.popitem(last=False)
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        found = self._events.get(last_event_id)
        if found is None:
            return None
        stream_id = found[0]
        after = False
        for event_id, (stream, message) in list(self._events.items()):
            if after and stream == stream_id and message is not None:  # that stream's messages only
                await send_callback(EventMessage(message, event_id))
            after = after or event_id == last_event_id
        return stream_id
