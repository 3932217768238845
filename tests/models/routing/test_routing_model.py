"""models/routing/model.py: the latency model's routing curves are its P50 (the expected wait), stop
where its replica's calls stop and never fall as calls pile up (a tree model repeats its last leaf
past its data, and dips with noise)."""

from __future__ import annotations

from typing import Any

import numpy as np

from only1mcp.models.latency.features import CausalFeatures
from only1mcp.models.routing.model import LEVEL_SUPPORT, ModelRouting

T0 = 1_790_000_000.0
LEVELS = 6


class ByInflight:
    """A stand-in latency model (anything with ``predict(X) -> (p50, p95)``): its P50 is a fixed value
    per in-flight level, whatever the other features, so the shaping is what is under test; its P95
    is three times that, which routing must not use."""

    def __init__(self, p50_by_level: list[float]) -> None:
        self.p50 = p50_by_level

    def predict(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        levels = np.arange(len(X)) % LEVELS  # design rows: every key at inflight 0 … LEVELS-1
        p50 = np.asarray(self.p50)[levels]
        return p50, 3 * p50


def calls(replica: str, inflight: int, n: int, start: float = T0) -> list[dict[str, Any]]:
    return [{"event_id": f"{replica}-{inflight}-{i}", "ts": start + i * 0.001, "server": "s", "replica": replica,
             "tool": "s.t", "method": "tools/call", "status": "ok", "cache_hit": False, "inflight": inflight,
             "latency_ms": 10.0 * (inflight + 1), "request_bytes": 100} for i in range(n)]


def curves(events: list[dict[str, Any]], p50: list[float]) -> dict[str, list[float]]:
    side = ModelRouting(CausalFeatures(), levels=LEVELS, min_samples=5, model=ByInflight(p50))
    for event in events:
        side.learn_one(event)
    return side.curves(T0 + 10)[("s", "s.t")]


def test_a_curve_stops_at_the_last_level_with_enough_calls() -> None:
    events = [e for level in range(3) for e in calls("r0", level, LEVEL_SUPPORT)]
    events += calls("r0", 3, LEVEL_SUPPORT - 1)  # one call short: level 3 and past are the model's guess
    events += calls("r0", 4, 500)  # a gap below it: the levels count from 0 without one
    events += calls("r1", 0, 3) + calls("r1", 1, 300)  # too few idle calls: still its level 0
    got = curves(events, [10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    assert got["r0"] == [10.0, 20.0, 30.0]
    assert got["r1"] == [10.0]


def test_a_curve_never_falls_as_calls_pile_up() -> None:
    events = [e for level in range(LEVELS) for e in calls("r0", level, LEVEL_SUPPORT)]
    assert curves(events, [58.0, 55.0, 89.0, 103.0, 112.0, 104.0])["r0"] == [58.0, 58.0, 89.0, 103.0, 112.0, 112.0]


def test_pruned_replicas_forget_their_levels() -> None:
    side = ModelRouting(CausalFeatures(), levels=LEVELS, min_samples=5, ttl_s=60.0, model=ByInflight([1.0] * LEVELS))
    for event in calls("r0", 0, LEVEL_SUPPORT) + calls("r0", 1, LEVEL_SUPPORT):
        side.learn_one(event)
    assert side.supported_levels(("s", "s.t", "r0")) == 2
    assert side.prune(T0 + 3600) == 1
    assert side.supported_levels(("s", "s.t", "r0")) == 1
