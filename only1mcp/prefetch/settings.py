"""``[prefetch]``: the proxy's prefetch executor (``proxy/prefetch``), off by default.

The learning loop publishes ``PrefetchDecision`` records (session, tool, confidence) on
``mcp.prefetch``; a proxy with ``enabled = true`` reads that topic beside the other decision topics,
fills each decision's arguments from the session's own recent calls and results (kept in memory
only, bounded here), and runs the call in the background within the budget below, storing the result
in the response cache for the session's client. Per server (``[[servers]] prefetch = false``) and per
tool (``[servers.tools.NAME] prefetch = false``) opt-outs live with those tables.
"""

from __future__ import annotations

from dataclasses import dataclass

from only1mcp.traffic import _positive, _share, check

__all__ = ["PrefetchSettings"]


def _bytes(value: int) -> str | None:
    # Below 256 bytes hardly an id survives; above 1 MiB the parse alone would cost milliseconds per call.
    return None if 256 <= value <= 1024 * 1024 else "must be between 256 bytes and 1 MiB"


@dataclass(frozen=True)
class PrefetchSettings:
    enabled: bool = False  # off: no session memory, no mcp.prefetch subscription, no per-call work
    # The decision's confidence × the arguments' confidence must reach this, else the decision is vetoed.
    min_confidence: float = check(_share, 0.5)
    max_concurrent: int = check(_positive, 4)  # prefetches in flight at once; past it a decision is refused
    # Prefetches over the last window_s seconds may be at most this share of the client tools/calls over
    # the same window: the extra upstream load prefetch may add.
    max_share: float = check(_share, 0.2)
    window_s: float = check(_positive, 60.0)
    # Session memory (arguments and result values of recent calls; in memory only, never saved):
    max_sessions: int = check(_positive, 10_000)  # sessions remembered; the least recently active go first
    max_calls: int = check(_positive, 8)  # calls remembered per session (the latest of each tool, LRU)
    # Values kept per result, and argument names per session. The first ones in the result's order: an
    # agent takes the first hits, the record's own fields; each value costs the proxy about a microsecond.
    max_values: int = check(_positive, 32)
    session_idle: float = check(_positive, 1800.0)  # seconds without a call before a session's memory goes
    result_bytes: int = check(_bytes, 8192)  # of a result's text parsed for values (the rest is ignored)
