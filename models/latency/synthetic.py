"""A small, seeded, load-sensitive workload of RequestEvent dicts, for tests and demos.

Why it exists: the latency model's claim is that it predicts what a per-(replica, tool) EWMA
cannot — how a replica's latency climbs with the calls already in flight there. This generator
makes that true by construction, with a queue that is self-consistent (``inflight`` at routing
is the number of earlier calls on the replica still running then):

    latency = base[tool, replica] × (1 + inflight) ** exponent × lognormal(0, sigma)

Arrivals are Poisson with a rate that swings slowly (so load, and inflight, vary), routing is
uniform at random (every replica keeps being observed), and a small share of calls fail.
"""

from __future__ import annotations

import heapq
import uuid
from typing import Any

import numpy as np

__all__ = ["load_sensitive_events"]


def load_sensitive_events(n: int = 6000, *, seed: int = 0, replicas: int = 4, tools: int = 5,
                          rate: float | None = None, exponent: float = 1.5, sigma: float = 0.25,
                          error_rate: float = 0.01, timeout_ms: float = 10_000.0, start: float = 1_790_000_000.0,
                          server: str = "sim") -> list[dict[str, Any]]:
    """``n`` tools/call events in ``ts`` order (RequestEvent fields), ``rate`` calls/s on average
    (default 6.25 per replica: busy enough that calls queue, far enough from the point where a
    replica's throughput peaks — past it the queue runs away to the timeout)."""
    rate = 6.25 * replicas if rate is None else rate
    rng = np.random.default_rng(seed)
    base = rng.uniform(5.0, 40.0, size=(tools, replicas))  # ms; tool specialisation across replicas
    names = [f"{server}/{r}" for r in range(replicas)]
    running: list[list[float]] = [[] for _ in range(replicas)]  # completion-time heaps
    events, ts = [], start
    for _ in range(n):
        swing = 1.0 + 0.6 * np.sin((ts - start) / 20.0)  # a 2-minute load cycle, 0.4× … 1.6× the rate
        ts += float(rng.exponential(1.0 / (rate * swing)))
        r, t = int(rng.integers(replicas)), int(rng.integers(tools))
        heap = running[r]
        while heap and heap[0] <= ts:
            heapq.heappop(heap)
        inflight = len(heap)
        latency = float(base[t, r] * (1.0 + inflight) ** exponent * rng.lognormal(0.0, sigma))
        timed_out = latency > timeout_ms  # keeps an overloaded replica from running away
        latency = min(latency, timeout_ms)
        failed = timed_out or rng.random() < error_rate
        heapq.heappush(heap, ts + latency / 1000.0)
        events.append({
            "event_id": uuid.UUID(int=int(rng.integers(2**63)) << 64 | len(events)).hex,
            "ts": ts, "latency_ms": latency, "method": "tools/call",
            "status": "timeout" if timed_out else "error" if failed else "ok",
            "error_class": "timeout" if timed_out else "tool_error" if failed else None,
            "tool": f"{server}.tool{t}", "server": server, "replica": names[r],
            "request_bytes": int(rng.integers(80, 400)), "response_bytes": int(rng.integers(100, 2000)),
            "cache_hit": False, "attempts": 1, "inflight": inflight, "policy": "random",
        })
    return events
