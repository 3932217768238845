"""Sinks without a broker: ``MemorySink`` keeps the events (tests, embedding), ``NullSink``
counts and forgets them (events turned off)."""

from __future__ import annotations

from typing import Any

from only1mcp.events import RequestEvent

__all__ = ["MemorySink", "NullSink"]


class NullSink:
    """Events are off: count them and let them go."""

    def __init__(self) -> None:
        self.emitted = 0

    def emit(self, event: RequestEvent) -> None:
        self.emitted += 1

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    def counters(self) -> dict[str, Any]:
        return {"emitted": self.emitted, "spooled": 0, "replayed": 0, "dropped": 0, "queue_depth": 0,
                "broker_up": False}


class MemorySink:
    """Keeps every event in ``events`` (up to ``limit``; past it the oldest go and count as dropped)."""

    def __init__(self, limit: int | None = None) -> None:
        self.events: list[RequestEvent] = []
        self.limit = limit
        self.emitted = 0
        self.dropped = 0
        self.started = False

    def emit(self, event: RequestEvent) -> None:
        self.emitted += 1
        self.events.append(event)
        if self.limit is not None and len(self.events) > self.limit:
            del self.events[0]
            self.dropped += 1

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.started = False

    def clear(self) -> None:
        self.events.clear()

    def counters(self) -> dict[str, Any]:
        return {"emitted": self.emitted, "spooled": 0, "replayed": 0, "dropped": self.dropped,
                "queue_depth": len(self.events), "broker_up": False}
