"""What the prefetch agent remembers per session, bounded, and how often a tool repeats its arguments.

Only keyed hashes reach the worker (``RequestEvent.session_id``, ``args_hash``), so a session here is
its recent tool names (oldest first), the tools it ever called (the eligibility rule: a decision only
names a tool the session already called), the newest arguments' hash and server per tool, and the
newest prediction made after its last call (scored when the next call comes: the online accuracy).

Bounds: at most ``max_sessions`` sessions (the least recently active dropped first), each dropped
once it has been idle for ``idle_s`` of *stream* time (the newest event time seen: a replayed backlog
does not expire everything at once), ``max_history`` tools per session, and ``_MAX_TOOLS`` tools per
session in ``called`` / ``last_args`` (the least recently called forgotten first).
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

__all__ = ["SessionState", "SessionTracker", "RepeatStats"]

_MAX_TOOLS = 64  # tools remembered per session (called, newest arguments, server)
_OLD = float("-inf")


class SessionState:
    """One session's recent calls (see the module doc)."""

    __slots__ = ("tools", "times", "last", "partition", "last_ts", "last_event", "last_end", "predicted")

    def __init__(self, partition: int) -> None:
        self.tools: list[str] = []  # recent tool names, oldest first (at most max_history)
        self.times: list[float] = []  # their event times
        # every tool the session called (up to _MAX_TOOLS, least recent out first) → (args hash, server) of its newest call
        self.last: OrderedDict[str, tuple[str | None, str | None]] = OrderedDict()
        self.partition = partition  # of mcp.feature-events: the session goes when the partition does
        self.last_ts = _OLD  # newest event time
        self.last_event = ""  # its event id
        self.last_end = _OLD  # when that call ended (ts + latency)
        self.predicted: list[tuple[str, float]] = []  # the likeliest next tools after the newest call

    def add(self, tool: str, ts: float, args_hash: str | None, server: str | None, max_history: int) -> bool:
        """Remember a call; False when it is older than the session's newest (inserted in its place)."""
        newest = ts >= self.last_ts
        if newest:
            self.last_ts = ts
        at = len(self.times) if newest else bisect.bisect_right(self.times, ts)
        self.tools.insert(at, tool)
        self.times.insert(at, ts)
        if len(self.tools) > max_history:
            del self.tools[0], self.times[0]
        if newest or tool not in self.last:
            self.last[tool] = (args_hash, server)
            self.last.move_to_end(tool)
            if len(self.last) > _MAX_TOOLS:
                self.last.popitem(last=False)
        return newest

    def before(self, ts: float) -> list[str]:
        """The session's remembered tools called before ``ts`` (the context of a late call)."""
        return self.tools[:bisect.bisect_left(self.times, ts)]


class SessionTracker:
    """Sessions by their keyed id, least recently active first (see the module doc)."""

    def __init__(self, max_sessions: int, idle_s: float, max_history: int) -> None:
        self.max_sessions, self.idle_s, self.max_history = max_sessions, idle_s, max_history
        self.sessions: OrderedDict[str, SessionState] = OrderedDict()
        self.stream_time = _OLD
        self.evicted = self.expired = 0

    def __len__(self) -> int:
        return len(self.sessions)

    def get(self, session_id: str, partition: int, ts: float) -> SessionState:
        """The session's state (new when unknown), marked most recently active."""
        state = self.sessions.get(session_id)
        if state is None:
            state = self.sessions[session_id] = SessionState(partition)
            if len(self.sessions) > self.max_sessions:
                self.sessions.popitem(last=False)
                self.evicted += 1
        else:
            self.sessions.move_to_end(session_id)
            state.partition = partition
        if ts > self.stream_time:
            self.stream_time = ts
        return state

    def expire(self) -> int:
        """Drop the sessions idle for ``idle_s`` of stream time; returns how many went. The least
        recently active come first, so this stops at the first one still active."""
        horizon, gone = self.stream_time - self.idle_s, 0
        while self.sessions:
            session_id, state = next(iter(self.sessions.items()))
            if state.last_ts >= horizon:
                break
            del self.sessions[session_id]
            gone += 1
        self.expired += gone
        return gone

    def drop_partitions(self, partitions: Iterable[int]) -> int:
        """Forget the sessions of partitions this worker no longer owns; returns how many."""
        gone = set(partitions)
        if not gone:
            return 0
        doomed = [sid for sid, state in self.sessions.items() if state.partition in gone]
        for session_id in doomed:
            del self.sessions[session_id]
        return len(doomed)


class RepeatStats:
    """Per tool: how often a call repeated the arguments (hash) of the session's previous call of
    that tool, counted only when there was one. ``confident(tool)`` once ``min_calls`` such calls
    repeated at least ``threshold`` of the time (counts halve past ``_CAP``: habits may change)."""

    _CAP = 1000.0

    def __init__(self, threshold: float, min_calls: int = 20, max_tools: int = 10_000) -> None:
        self.threshold, self.min_calls, self.max_tools = threshold, min_calls, max_tools
        self.counts: dict[str, list[float]] = {}  # tool → [repeats, calls]

    def observe(self, tool: str, repeated: bool) -> None:
        counts = self.counts.get(tool)
        if counts is None:
            if len(self.counts) >= self.max_tools:
                return
            counts = self.counts[tool] = [0.0, 0.0]
        counts[0] += repeated
        counts[1] += 1.0
        if counts[1] > self._CAP:
            counts[0] /= 2.0
            counts[1] /= 2.0

    def rate(self, tool: str) -> float | None:
        counts = self.counts.get(tool)
        return counts[0] / counts[1] if counts and counts[1] else None

    def confident(self, tool: str) -> bool:
        counts = self.counts.get(tool)
        return bool(counts) and counts[1] >= self.min_calls and counts[0] >= self.threshold * counts[1]

    def state(self) -> dict[str, Any]:
        return {tool: list(c) for tool, c in self.counts.items()}
