"""Request events from the proxy to the streaming half.

``make_sink(settings)`` picks the sink: :class:`NullSink` when ``settings.bootstrap`` is ""
(events off), else :class:`KafkaSink` (memory queue → Kafka, disk spool while the broker is
away). Every sink follows :class:`EventSink`: ``emit`` never blocks and never raises.
"""

from __future__ import annotations

from only1mcp.streaming import EventSettings

from .base import COUNTER_KEYS, EventSink
from .memory import MemorySink, NullSink

__all__ = ["EventSink", "COUNTER_KEYS", "MemorySink", "NullSink", "KafkaSink", "Spool", "make_sink"]


def make_sink(settings: EventSettings) -> EventSink:
    """NullSink when events are off (no bootstrap), else a KafkaSink (not started yet)."""
    if not settings.bootstrap:
        return NullSink()
    from .kafka import KafkaSink

    return KafkaSink(settings)


def __getattr__(name: str) -> object:  # KafkaSink and Spool load aiokafka and friends only when used
    if name == "KafkaSink":
        from .kafka import KafkaSink

        return KafkaSink
    if name == "Spool":
        from .spool import Spool

        return Spool
    raise AttributeError(name)
