"""Passive outlier detection for the replicas of ONE server, with ejection (as Envoy's).

A replica is an outlier after ``consecutive_failures`` failed calls in a row, or when, over
the last ``window`` seconds and at least ``min_requests`` calls, its share of failures reaches
``error_rate``. An outlier is ejected for ``ejection_time × multiplier`` (capped at
``max_ejection_time``), where the multiplier grows by one per ejection and, as in Envoy, shrinks
by one per ``ejection_time`` the replica then spends un-ejected. It returns by itself when the
time is up. At most ``max_ejected_share`` of the server's replicas are ejected at once; an
outlier over that cap stays in (counted in ``skipped`` and shown as ``held_back``).

Pure and synchronous: every time-dependent call takes ``now`` (seconds, monotonic).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any

from only1mcp.traffic import OutlierSettings

__all__ = ["OutlierDetector", "BUCKETS"]

# The error-rate window is kept as this many time buckets, not one entry per call, so memory
# stays constant at any call rate; the window is thus exact to within window / BUCKETS.
BUCKETS = 10


class _Replica:
    __slots__ = ("failures", "timeouts", "buckets", "ejected_until", "times_ejected", "multiplier",
                 "returned_at", "held_back", "skipped")

    def __init__(self) -> None:
        self.failures = 0  # consecutive
        self.timeouts = 0  # consecutive timeouts, shown for diagnosis
        self.buckets: deque[list[int]] = deque()  # [bucket index, calls, failures]
        self.ejected_until: float | None = None
        self.times_ejected = 0
        self.multiplier = 0
        self.returned_at: float | None = None
        self.held_back = False
        self.skipped = 0


class OutlierDetector:
    """Counters for metrics: ``ejections``, ``returns`` and ``skipped`` (outliers left in
    because the share cap was reached)."""

    def __init__(self, settings: OutlierSettings, replicas: Iterable[str] = ()) -> None:
        self.settings = settings
        self._width = settings.window / BUCKETS
        self._replicas: dict[str, _Replica] = {}
        self.ejections = 0
        self.returns = 0
        self.skipped = 0
        self.set_replicas(replicas)

    def set_replicas(self, ids: Iterable[str]) -> None:
        """The server's current replicas: new ones start clean, removed ones are forgotten."""
        wanted = list(dict.fromkeys(ids))
        self._replicas = {rid: self._replicas.get(rid) or _Replica() for rid in wanted}

    def _get(self, replica_id: str) -> _Replica:
        # A call recorded for an unknown replica adds it: it is in the routing set after all.
        state = self._replicas.get(replica_id)
        if state is None:
            state = self._replicas[replica_id] = _Replica()
        return state

    def _refresh(self, now: float) -> None:
        for state in self._replicas.values():
            if state.ejected_until is not None and now >= state.ejected_until:
                state.returned_at, state.ejected_until = state.ejected_until, None
                self.returns += 1

    def _window(self, state: _Replica, now: float) -> tuple[int, int]:
        first = math.floor(now / self._width) - BUCKETS + 1
        while state.buckets and state.buckets[0][0] < first:
            state.buckets.popleft()
        return sum(b[1] for b in state.buckets), sum(b[2] for b in state.buckets)

    def record(self, replica_id: str, ok: bool, now: float, timeout: bool = False) -> bool:
        """The outcome of one call; a timeout counts as a failure whatever ``ok`` says.
        Returns True when this call got the replica ejected."""
        self._refresh(now)
        state = self._get(replica_id)
        if state.ejected_until is not None:
            return False  # calls still landing on an ejected replica neither extend nor shorten it
        failed = timeout or not ok
        state.failures = state.failures + 1 if failed else 0
        state.timeouts = state.timeouts + 1 if timeout else 0
        index = math.floor(now / self._width)
        if state.buckets and state.buckets[-1][0] >= index:  # same bucket (or a clock that stepped back)
            state.buckets[-1][1] += 1
            state.buckets[-1][2] += failed
        else:
            state.buckets.append([index, 1, int(failed)])
        calls, failures = self._window(state, now)
        by_rate = calls >= self.settings.min_requests and failures / calls >= self.settings.error_rate
        if not failed or not (state.failures >= self.settings.consecutive_failures or by_rate):
            state.held_back = state.held_back and failed
            return False
        return self._eject(state, now)

    def _eject(self, state: _Replica, now: float) -> bool:
        ejected_now = sum(s.ejected_until is not None for s in self._replicas.values())
        # Strictly capped (floor), so a detector can never take out the whole server by itself.
        if ejected_now + 1 > math.floor(self.settings.max_ejected_share * len(self._replicas) + 1e-9):
            state.held_back = True
            state.skipped += 1
            self.skipped += 1
            return False
        state.multiplier = self._multiplier(state, now) + 1
        duration = min(self.settings.ejection_time * state.multiplier, self.settings.max_ejection_time)
        state.ejected_until = now + duration
        state.times_ejected += 1
        # Envoy resets the counters on ejection: the replica comes back with a clean slate.
        state.failures = state.timeouts = 0
        state.buckets.clear()
        state.held_back = False
        self.ejections += 1
        return True

    def _multiplier(self, state: _Replica, now: float) -> int:
        if state.ejected_until is not None or state.returned_at is None:
            return state.multiplier
        healthy_periods = int((now - state.returned_at) // self.settings.ejection_time)
        return max(0, state.multiplier - healthy_periods)

    def is_ejected(self, replica_id: str, now: float) -> bool:
        self._refresh(now)
        state = self._replicas.get(replica_id)
        return state is not None and state.ejected_until is not None

    def ejected(self, now: float) -> set[str]:
        self._refresh(now)
        return {rid for rid, s in self._replicas.items() if s.ejected_until is not None}

    def snapshot(self, now: float) -> dict[str, dict[str, Any]]:
        """Per replica: ejected until, times ejected, multiplier, recent error rate and calls,
        consecutive failures and timeouts, and whether an ejection was held back by the cap."""
        self._refresh(now)
        out: dict[str, dict[str, Any]] = {}
        for rid, state in self._replicas.items():
            calls, failures = self._window(state, now)
            out[rid] = {
                "ejected": state.ejected_until is not None,
                "ejected_until": state.ejected_until,
                "times_ejected": state.times_ejected,
                "multiplier": self._multiplier(state, now),
                "error_rate": failures / calls if calls else None,
                "recent_calls": calls,
                "consecutive_failures": state.failures,
                "consecutive_timeouts": state.timeouts,
                "held_back": state.held_back,
                "skipped": state.skipped,
            }
        return out

    def counters(self) -> dict[str, int]:
        return {"ejections": self.ejections, "returns": self.returns, "skipped": self.skipped}
