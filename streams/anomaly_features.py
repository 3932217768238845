"""Per-tick aggregation for the anomaly agent: request events in, one observation per entity out.

An entity is a replica ``(server, replica, None)`` or a replica × tool ``(server, replica, tool)``.
:meth:`Aggregator.add` costs O(1) per event (counters, a bounded latency sample, a failure streak);
:meth:`Aggregator.roll` closes the current tick's buckets and returns, per entity with calls in the
last ``window`` seconds, the observation the detectors see:

- ``calls_per_s``: calls in the window / the window's length (always present);
- ``error_rate`` (error, timeout and unavailable calls), ``timeout_rate``, ``latency_p50_ms`` and
  ``latency_p95_ms`` (of ok calls: a fast failure is no latency), ``inflight_mean`` (the proxy's
  calls in flight on the replica when it routed each call): NaN — missing — while the window holds
  fewer than ``min_calls`` calls (a rate from two calls is noise), and latencies NaN when no call
  succeeded.

An entity with no call in the window gets no observation at all: silence is not evidence (a
replica the agent itself ejected gets no calls), so it is neither scored nor learned from.

Latencies are kept per tick in a reservoir of ``_SAMPLE`` values: O(1) per event, a bounded sort
per tick; at rates above ``_SAMPLE`` calls per tick and entity each tick weighs the same.
"""

from __future__ import annotations

import collections
import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Entity", "Aggregator", "quantile", "is_call", "hard_failure", "FAILED"]

Entity = tuple[str, str, str | None]  # (server, replica, tool or None for the whole replica)
_SAMPLE = 64  # latencies kept per entity and tick
FAILED = frozenset({"error", "timeout", "unavailable"})
_COUNTED = FAILED | {"ok"}
NAN = math.nan


def is_call(event: Mapping[str, Any]) -> bool:
    """A tools/call that reached (or tried to reach) a replica: what the agent judges replicas on."""
    return (event.get("method") == "tools/call" and not event.get("cache_hit") and event.get("status") in _COUNTED
            and bool(event.get("server")) and bool(event.get("replica")))


def hard_failure(event: Mapping[str, Any]) -> bool:
    """A failure the replica is to blame for (a tool's own isError answer is not one)."""
    return event["status"] in FAILED and event.get("error_class") != "tool_error"


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated quantile of an ascending list (NaN when empty)."""
    if not sorted_values:
        return NAN
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


class _Bucket:
    """One entity's calls in one tick."""

    __slots__ = ("calls", "errors", "timeouts", "ok", "latencies", "inflight_sum", "inflight_n")

    def __init__(self) -> None:
        self.calls = self.errors = self.timeouts = self.ok = self.inflight_n = 0
        self.inflight_sum = 0.0
        self.latencies: list[float] = []


class Aggregator:
    """Buckets per entity and tick, a sliding window of ``buckets`` ticks, failure streaks per replica."""

    def __init__(self, window_s: float, tick_s: float, min_calls: int, per_tool: bool = True,
                 seed: int = 0) -> None:
        self.window_s, self.min_calls, self.per_tool = window_s, min_calls, per_tool
        self.buckets = max(1, round(window_s / tick_s))
        self.current: dict[Entity, _Bucket] = {}
        self.history: dict[Entity, collections.deque[_Bucket]] = {}
        # replica (server, replica, None) → [consecutive hard failures, unix time of the last one]
        self.streaks: dict[Entity, list[float]] = {}
        self.rng = random.Random(seed)

    # -- per event ------------------------------------------------------------------------------

    def add_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Fold the calls among ``events``; returns how many were calls."""
        n = 0
        for event in events:
            if is_call(event):
                self.add(event)
                n += 1
        return n

    def add(self, event: Mapping[str, Any]) -> None:
        server, replica, status = event["server"], event["replica"], event["status"]
        key: Entity = (server, replica, None)
        self._fold(key, event, status)
        tool = event.get("tool")
        if self.per_tool and tool:
            self._fold((server, replica, tool), event, status)
        streak = self.streaks.get(key)
        if streak is None:
            streak = self.streaks[key] = [0, 0.0]
        if hard_failure(event):
            streak[0] += 1
            streak[1] = float(event["ts"])
        elif status == "ok":
            streak[0] = 0

    def _fold(self, key: Entity, event: Mapping[str, Any], status: str) -> None:
        bucket = self.current.get(key)
        if bucket is None:
            bucket = self.current[key] = _Bucket()
        bucket.calls += 1
        if status in FAILED:
            bucket.errors += 1
            if status == "timeout":
                bucket.timeouts += 1
        else:
            bucket.ok += 1
            latencies = bucket.latencies
            if len(latencies) < _SAMPLE:
                latencies.append(float(event["latency_ms"]))
            else:  # reservoir sampling: every ok call of the tick equally likely to be kept
                slot = self.rng.randrange(bucket.ok)
                if slot < _SAMPLE:
                    latencies[slot] = float(event["latency_ms"])
        inflight = event.get("inflight")
        if inflight is not None:
            bucket.inflight_sum += inflight
            bucket.inflight_n += 1

    # -- per tick -------------------------------------------------------------------------------

    def streak(self, replica: Entity) -> tuple[int, float]:
        """(consecutive hard failures, unix time of the last) of a replica."""
        found = self.streaks.get(replica)
        return (int(found[0]), found[1]) if found else (0, 0.0)

    def roll(self) -> dict[Entity, dict[str, float]]:
        """Close this tick's buckets; the observation of every entity with calls in the window."""
        current, self.current = self.current, {}
        out: dict[Entity, dict[str, float]] = {}
        for key in set(self.history) | set(current):
            window = self.history.get(key)
            if window is None:
                window = self.history[key] = collections.deque(maxlen=self.buckets)
            window.append(current.get(key) or _EMPTY)
            observation = self._observe(window)
            if observation is None:
                if all(b is _EMPTY for b in window):
                    del self.history[key]  # idle for a whole window: forget its buckets
                continue
            out[key] = observation
        return out

    def _observe(self, window: Iterable[_Bucket]) -> dict[str, float] | None:
        calls = errors = timeouts = inflight_n = 0
        inflight_sum = 0.0
        latencies: list[float] = []
        for b in window:
            calls += b.calls
            errors += b.errors
            timeouts += b.timeouts
            inflight_sum += b.inflight_sum
            inflight_n += b.inflight_n
            latencies += b.latencies
        if calls == 0:
            return None
        x = {"calls_per_s": calls / self.window_s, "error_rate": NAN, "timeout_rate": NAN, "latency_p50_ms": NAN,
             "latency_p95_ms": NAN, "inflight_mean": NAN}
        if calls >= self.min_calls:
            latencies.sort()
            x.update(error_rate=errors / calls, timeout_rate=timeouts / calls, latency_p50_ms=quantile(latencies, 0.5),
                     latency_p95_ms=quantile(latencies, 0.95),
                     inflight_mean=inflight_sum / inflight_n if inflight_n else NAN)
        return x


_EMPTY = _Bucket()  # a tick without calls (shared: never written to)
