"""Adaptive TTLs: per tool, a TTL that grows while the tool's results stay the same and shrinks
when they change, learned from what the response cache already sees.

When a call misses because its entry has just expired, the proxy compares the fresh result with
the expired one. The same bytes mean the entry could have lived longer: the tool's TTL grows
(× ``GROW``, up to ``high``). Different bytes mean a cached answer may have been stale near its
end: the TTL shrinks (× ``SHRINK``, down to ``low``). It shrinks faster than it grows because a
stale answer costs the client more than one extra upstream call costs the proxy.

Each tool starts from its configured TTL (``cache_ttl``, else ``[cache] default_ttl``) and
starts over when that changes (a reload). Pure and synchronous like the cache: a dict look-up
per call, no clock, no I/O, nothing kept per call key. (``models/prefetch/ttl.py`` estimates a
change rate per tool for ``bench cache``; the proxy keeps this rule, which needs no per-call
memory and no numpy on the call path.)
"""

from __future__ import annotations

from typing import Any

__all__ = ["AdaptiveTTLs", "GROW", "SHRINK"]

GROW = 1.5
SHRINK = 0.5


class _Learned:
    __slots__ = ("ttl", "base", "unchanged", "changed")

    def __init__(self, base: float) -> None:
        self.ttl, self.base, self.unchanged, self.changed = base, base, 0, 0


class AdaptiveTTLs:
    """The learned TTL of each (server, upstream tool) whose cached results have expired at least once."""

    def __init__(self) -> None:
        self._tools: dict[tuple[str, str], _Learned] = {}

    def ttl(self, server: str, tool: str, base: float, low: float, high: float) -> float:
        """The TTL for a new entry of ``tool``: learned, else ``base``; always within [low, high]
        (bounds may have changed by a reload since it was learned)."""
        learned = self._tools.get((server, tool))
        value = base if learned is None or learned.base != base else learned.ttl
        return min(high, max(low, value))

    def learn(self, server: str, tool: str, base: float, low: float, high: float, changed: bool) -> float:
        """An expired entry of ``tool`` was fetched again: its result ``changed`` or not. The new TTL."""
        learned = self._tools.get((server, tool))
        if learned is None or learned.base != base:  # first time, or its configured TTL changed: start over
            learned = self._tools[(server, tool)] = _Learned(base)
        current = min(high, max(low, learned.ttl))
        if changed:
            learned.ttl = max(low, current * SHRINK)
            learned.changed += 1
        else:
            learned.ttl = min(high, current * GROW)
            learned.unchanged += 1
        return learned.ttl

    def forget(self, server: str) -> None:
        """Drop what was learned for ``server``'s tools (the server was removed)."""
        for key in [key for key in self._tools if key[0] == server]:
            del self._tools[key]

    def current(self) -> dict[tuple[str, str], float]:
        """(server, tool) → TTL in seconds, for the metrics."""
        return {key: learned.ttl for key, learned in self._tools.items()}

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """server → tool → {ttl, configured, unchanged, changed}, for the admin API."""
        view: dict[str, dict[str, dict[str, Any]]] = {}
        for (server, tool), learned in sorted(self._tools.items()):
            view.setdefault(server, {})[tool] = {"ttl": learned.ttl, "configured": learned.base,
                                                 "unchanged": learned.unchanged, "changed": learned.changed}
        return view

    def __len__(self) -> int:
        return len(self._tools)
