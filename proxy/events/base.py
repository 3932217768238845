"""The event sink contract: how the proxy hands request events to the streaming half.

A sink never slows or fails a call: ``emit`` only enqueues (or spools, or drops and counts)
and returns at once, whatever the broker does. Call ``emit`` from the event loop thread.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from only1mcp.events import RequestEvent

__all__ = ["EventSink", "COUNTER_KEYS"]

# Every sink's counters() has at least these keys.
COUNTER_KEYS = ("emitted", "spooled", "replayed", "dropped", "queue_depth", "broker_up")


@runtime_checkable
class EventSink(Protocol):
    def emit(self, event: RequestEvent) -> None:
        """Hand one event over; never blocks, never raises."""
        ...

    async def start(self) -> None:
        """Begin delivering (connect, replay what a previous run left in the spool)."""
        ...

    async def stop(self) -> None:
        """Flush what can be flushed within a bound, keep the rest on disk, release everything."""
        ...

    def counters(self) -> dict[str, Any]:
        """emitted, spooled, replayed, dropped, queue_depth, broker_up (and sink-specific extras)."""
        ...
