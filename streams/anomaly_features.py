"""Aggregation for the anomaly agent: request events in, one observation per entity and window out.

An entity is a replica ``(server, replica, None)`` or a replica × tool ``(server, replica, tool)``.
:meth:`Aggregator.add` costs O(1) per event (counters, a bounded latency sample, a failure streak).
Each entity's window tumbles on its own: :meth:`Aggregator.roll`, called every tick, closes the
windows that are at least ``window`` seconds old and hold ``min_calls`` calls — or that reached
``max_window`` seconds with fewer — and returns their observations:

- ``calls_per_s``: calls in the window / its length;
- ``error_rate`` (error, timeout and unavailable calls), ``timeout_rate``, ``latency_p50_ms`` and
  ``latency_p95_ms`` (of ok calls: a fast failure is no latency), ``inflight_mean`` (the proxy's
  calls in flight on the replica when it routed each call): NaN — missing — when even
  ``max_window`` gathered fewer than ``min_calls`` calls (a rate from two calls is noise), and
  latencies NaN when no call succeeded.

Why windows stretch: routing moves traffic away from a slow replica (learned weights send it a
call a second or less), so a fixed short window would hold too few of its calls to show the very
slowness that moved the traffic. Why they tumble rather than slide: a window sliding by one tick
shares most of its calls with the previous one, and the SPC charts read such autocorrelated rows
as shifts (measured: constant false alarms on healthy traffic). An entity with no call at all gets
no observation: silence is not evidence (a replica the agent itself ejected gets no calls).

Latencies are kept in a reservoir of ``_SAMPLE`` values per entity and window.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["Entity", "Aggregator", "quantile", "is_call", "is_thin", "hard_failure", "entity_name", "FAILED"]

Entity = tuple[str, str, str | None]  # (server, replica, tool or None for the whole replica)
_SAMPLE = 256  # latencies kept per entity and window
FAILED = frozenset({"error", "timeout", "unavailable"})
_COUNTED = FAILED | {"ok"}
NAN = math.nan


def is_call(event: Mapping[str, Any]) -> bool:
    """A tools/call that reached (or tried to reach) a replica: what the agent judges replicas on."""
    return (event.get("method") == "tools/call" and not event.get("cache_hit") and event.get("status") in _COUNTED
            and bool(event.get("server")) and bool(event.get("replica")))


def is_thin(observation: Mapping[str, float]) -> bool:
    """A window of fewer than ``min_calls`` calls: its rates and latencies are missing."""
    rate = observation.get("error_rate", NAN)
    return rate is None or math.isnan(rate)


def entity_name(entity: Entity) -> str:
    """``sim/1`` or ``sim/1 × search`` (the proxy's replica ids already start with the server)."""
    server, replica, tool = entity
    name = replica if replica.startswith(f"{server}/") else f"{server}/{replica}"
    return name + (f" × {tool}" if tool else "")


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
    """One entity's calls in one window."""

    __slots__ = ("started", "calls", "errors", "timeouts", "ok", "latencies", "inflight_sum", "inflight_n")

    def __init__(self, started: float) -> None:
        self.started = started  # unix time the window began (its first call, or the previous window's end)
        self.calls = self.errors = self.timeouts = self.ok = self.inflight_n = 0
        self.inflight_sum = 0.0
        self.latencies: list[float] = []


class Aggregator:
    """Per entity the calls of the current window; failure streaks per replica."""

    def __init__(self, window_s: float, min_calls: int, per_tool: bool = True, max_window_s: float | None = None,
                 seed: int = 0) -> None:
        self.window_s, self.min_calls, self.per_tool = window_s, min_calls, per_tool
        self.max_window_s = max(window_s, max_window_s if max_window_s is not None else 10 * window_s)
        self.current: dict[Entity, _Bucket] = {}
        self.now = 0.0  # the last tick's time: a new entity's window starts there
        # replica (server, replica, None) → [consecutive hard failures, unix time of the last one]
        self.streaks: dict[Entity, list[float]] = {}
        self.rng = random.Random(seed)

    # -- per event ------------------------------------------------------------------------------

    def add_many(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Fold the calls among ``events``; returns how many were calls. A record that is not a
        plausible call (the worker checked it already; a caller may not have) is skipped."""
        n = 0
        for event in events:
            try:
                if is_call(event):
                    self.add(event)
                    n += 1
            except (TypeError, ValueError, KeyError, AttributeError):
                continue
        return n

    def add(self, event: Mapping[str, Any]) -> None:
        # Everything read and converted first: a bad field changes nothing.
        server, replica, status, tool = event["server"], event["replica"], event["status"], event.get("tool")
        latency, ts = float(event["latency_ms"]), float(event["ts"])
        inflight = event.get("inflight")
        inflight = None if inflight is None else float(inflight)
        key: Entity = (server, replica, None)
        self._fold(key, status, latency, inflight, ts)
        if self.per_tool and tool:
            self._fold((server, replica, tool), status, latency, inflight, ts)
        streak = self.streaks.get(key)
        if streak is None:
            streak = self.streaks[key] = [0, 0.0]
        if hard_failure(event):
            streak[0] += 1
            streak[1] = ts
        elif status == "ok":
            streak[0] = 0

    def _fold(self, key: Entity, status: str, latency: float, inflight: float | None, ts: float) -> None:
        bucket = self.current.get(key)
        if bucket is None:
            bucket = self.current[key] = _Bucket(self.now or ts)  # (before the first tick: its first call)
        bucket.calls += 1
        if status in FAILED:
            bucket.errors += 1
            if status == "timeout":
                bucket.timeouts += 1
        else:
            bucket.ok += 1
            latencies = bucket.latencies
            if len(latencies) < _SAMPLE:
                latencies.append(latency)
            else:  # reservoir sampling: every ok call of the window equally likely to be kept
                slot = self.rng.randrange(bucket.ok)
                if slot < _SAMPLE:
                    latencies[slot] = latency
        if inflight is not None:
            bucket.inflight_sum += inflight
            bucket.inflight_n += 1

    # -- per window ------------------------------------------------------------------------------

    def streak(self, replica: Entity) -> tuple[int, float]:
        """(consecutive hard failures, unix time of the last) of a replica."""
        found = self.streaks.get(replica)
        return (int(found[0]), found[1]) if found else (0, 0.0)

    def roll(self, now: float) -> dict[Entity, dict[str, float]]:
        """Close the windows that are ready (see the module's doc); their entities' observations."""
        self.now, out = now, {}
        for key, bucket in list(self.current.items()):
            elapsed = now - bucket.started
            if elapsed >= self.max_window_s or (elapsed >= self.window_s and bucket.calls >= self.min_calls):
                out[key] = self._observe(bucket, max(elapsed, 1e-3))
                del self.current[key]  # the next call opens the next window (starting at this tick)
        return out

    def _observe(self, b: _Bucket, elapsed: float) -> dict[str, float]:
        x = {"calls_per_s": b.calls / elapsed, "error_rate": NAN, "timeout_rate": NAN, "latency_p50_ms": NAN,
             "latency_p95_ms": NAN, "inflight_mean": NAN}
        if b.calls >= self.min_calls:
            latencies = sorted(b.latencies)
            x.update(error_rate=b.errors / b.calls, timeout_rate=b.timeouts / b.calls,
                     latency_p50_ms=quantile(latencies, 0.5), latency_p95_ms=quantile(latencies, 0.95),
                     inflight_mean=b.inflight_sum / b.inflight_n if b.inflight_n else NAN)
        return x
