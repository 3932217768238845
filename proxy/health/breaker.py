"""A circuit breaker for one replica: closed, open, half-open.

Closed lets every call through and counts consecutive failures; at ``failure_threshold`` it
opens and refuses calls for ``open_for`` seconds; then it is half-open and lets at most
``half_open_probes`` calls through at once. A probe's success closes it; a failure opens it
again for a fresh ``open_for``.

Pure and synchronous: the caller passes the clock (``now``, seconds, monotonic) to every call
that depends on time, so tests drive it without sleeping.
"""

from __future__ import annotations

from typing import Any

from only1mcp.traffic import BreakerSettings

__all__ = ["CircuitBreaker", "CLOSED", "OPEN", "HALF_OPEN"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """``allow`` before a call (it reserves a probe when half-open), ``record`` after it.

    ``would_allow`` answers the same question without reserving, for filtering candidates.
    Counters for metrics: ``opened`` (closed or half-open → open), ``closed`` (half-open →
    closed), ``half_opened`` (open → half-open) and ``rejected`` (calls refused by ``allow``).
    """

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._state = CLOSED
        self._failures = 0  # consecutive failures while closed
        self._opened_at: float | None = None
        self._probes: list[float] = []  # start times of the probes in flight while half-open
        self.opened = 0
        self.closed = 0
        self.half_opened = 0
        self.rejected = 0

    @property
    def state(self) -> str:
        """The state as of the last call given a clock (open turns half-open only when asked)."""
        return self._state

    def _tick(self, now: float) -> None:
        if self._state == OPEN and self._opened_at is not None and now - self._opened_at >= self.settings.open_for:
            self._state = HALF_OPEN
            self._probes.clear()
            self.half_opened += 1
        if self._state == HALF_OPEN:
            # A probe whose caller never reported (cancelled, crashed) would hold its slot
            # forever and wedge the breaker half-open; a probe is forgotten after open_for.
            self._probes = [t for t in self._probes if now - t < self.settings.open_for]

    def would_allow(self, now: float) -> bool:
        """Whether ``allow(now)`` would say yes, without reserving a half-open probe."""
        self._tick(now)
        if self._state == CLOSED:
            return True
        if self._state == OPEN:
            return False
        return len(self._probes) < self.settings.half_open_probes

    def allow(self, now: float) -> bool:
        """May a call go to this replica now? When half-open a yes takes one probe slot."""
        if not self.would_allow(now):
            self.rejected += 1
            return False
        if self._state == HALF_OPEN:
            self._probes.append(now)
        return True

    def release(self, now: float) -> None:
        """Give back a probe slot for a call that ended without an outcome (e.g. cancelled)."""
        self._tick(now)
        if self._probes:
            self._probes.pop(0)

    def record(self, ok: bool, now: float) -> None:
        """The outcome of a call. Outcomes arriving while open are stale (the call began
        before the breaker opened) and ignored, so they neither close it nor extend it."""
        self._tick(now)
        if self._state == CLOSED:
            self._failures = 0 if ok else self._failures + 1
            if self._failures >= self.settings.failure_threshold:
                self._open(now)
        elif self._state == HALF_OPEN:
            if self._probes:
                self._probes.pop(0)
            if ok:
                self._state, self._failures, self._opened_at = CLOSED, 0, None
                self._probes.clear()
                self.closed += 1
            else:
                self._open(now)

    def _open(self, now: float) -> None:
        self._state, self._opened_at, self._failures = OPEN, now, 0
        self._probes.clear()
        self.opened += 1

    def snapshot(self) -> dict[str, Any]:
        reopens_at = None
        if self._state == OPEN and self._opened_at is not None:
            reopens_at = self._opened_at + self.settings.open_for
        return {
            "state": self._state,
            "consecutive_failures": self._failures,
            "opened_at": self._opened_at,
            "half_open_at": reopens_at,
            "probes_in_flight": len(self._probes),
            "opened": self.opened,
            "closed": self.closed,
            "half_opened": self.half_opened,
            "rejected": self.rejected,
        }
