"""Session stickiness around any policy: a client session stays on the replica it started on.

Upstream MCP sessions carry state (subscriptions, elicitation in progress, server-side
caches), so a session's calls go to the replica it is pinned to while that replica is
ready. When it is not, the inner policy picks again and the session is re-pinned there;
it does not move back when the old replica returns (that would split its state twice).
Memory is bounded: the least recently used pins are forgotten past ``max_sessions``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from only1mcp.proxy.routing.base import Decision, RouteRequest, RoutingPolicy

__all__ = ["Sticky", "DEFAULT_MAX_SESSIONS"]

DEFAULT_MAX_SESSIONS = 100_000  # under ~20 MB of pins, session id strings included


class Sticky:
    def __init__(self, inner: RoutingPolicy, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be positive")
        self.inner = inner
        self.name = f"sticky+{inner.name}"
        self.max_sessions = max_sessions
        self._pins: OrderedDict[str, str] = OrderedDict()  # session id → replica id, oldest use first

    def __len__(self) -> int:
        return len(self._pins)

    def pinned(self, session_id: str) -> str | None:
        return self._pins.get(session_id)

    def forget(self, session_id: str) -> None:
        """Drop a pin, e.g. when the client session ends."""
        self._pins.pop(session_id, None)

    def choose(self, candidates: Sequence[Any], request: RouteRequest) -> Decision:
        session = request.session_id
        if session is None:
            decision = self.inner.choose(candidates, request)
            return replace(decision, reason=f"no session to pin; {decision.reason}")
        pinned = self._pins.get(session)
        if pinned is not None:
            replica = next((c for c in candidates if c.id == pinned), None)
            if replica is not None:
                self._pins.move_to_end(session)
                return Decision(replica, self.name, f"sticky: session pinned to {replica.id}")
        decision = self.inner.choose(candidates, request)
        self._pins[session] = decision.replica.id
        self._pins.move_to_end(session)
        if len(self._pins) > self.max_sessions:
            self._pins.popitem(last=False)
        why = "new session, pinned" if pinned is None else f"{pinned} is not ready, re-pinned"
        return replace(decision, reason=f"sticky: {why} to {decision.replica.id}; {decision.reason}")
