"""CausalFeatures: only calls completed before the routing instant count; offline == online."""

from __future__ import annotations

import copy
import heapq

import numpy as np
import pytest

from only1mcp.models.latency.features import (
    FEATURE_NAMES, FEATURE_VERSION, CausalFeatures, is_training_row, training_frame,
)
from only1mcp.models.latency.synthetic import load_sensitive_events

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return load_sensitive_events(1500, seed=3)


def call(ts: float, latency_ms: float, replica: str = "s/0", tool: str = "t", status: str = "ok",
         inflight: int = 0) -> dict:
    return {"ts": ts, "latency_ms": latency_ms, "replica": replica, "tool": tool, "status": status,
            "inflight": inflight, "request_bytes": 100, "method": "tools/call"}


def test_names_and_version_are_declared() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    assert isinstance(FEATURE_VERSION, int)
    assert len(CausalFeatures().features("s/0", "t", 0, 1000.0)) == len(FEATURE_NAMES)


def test_a_call_still_running_at_routing_time_is_not_seen() -> None:
    cf = CausalFeatures()
    cf.learn_one(call(0.0, 5000.0))  # completes at t = 5
    early = cf.features("s/0", "t", 1, 1.0)
    assert early[COL["rt_count"]] == 0 and early[COL["replica_count"]] == 0
    assert early[COL["rt_latency_ewma_ms"]] == 0.0  # nothing known yet, not the running call's latency
    at_completion = cf.features("s/0", "t", 1, 5.0)  # completion == ts: not "before"
    assert at_completion[COL["rt_count"]] == 0
    later = cf.features("s/0", "t", 0, 6.0)
    assert later[COL["rt_count"]] == 1 and later[COL["rt_latency_ewma_ms"]] == 5000.0


def test_only_upstream_tool_calls_are_learned() -> None:
    cf = CausalFeatures()
    cf.learn_one({**call(0.0, 100.0), "method": "tools/list"})
    cf.learn_one({**call(0.0, 100.0), "cache_hit": True})
    cf.learn_one({**call(0.0, 100.0), "replica": None})
    assert cf.features("s/0", "t", 0, 10.0)[COL["replica_count"]] == 0
    cf.learn_one(call(0.0, 100.0))
    assert cf.features("s/0", "t", 0, 10.0)[COL["replica_count"]] == 1
    X, _, _ = training_frame([{**call(0.0, 1.0), "cache_hit": True}, call(1.0, 1.0)])
    assert X.shape == (1, len(FEATURE_NAMES))


def test_out_of_order_completions_are_applied_in_completion_order() -> None:
    cf = CausalFeatures(alpha=0.5)
    cf.learn_one(call(0.0, 3000.0))  # completes at 3
    cf.learn_one(call(1.0, 500.0))  # completes at 1.5, learned second
    x = cf.features("s/0", "t", 0, 10.0)
    assert x[COL["rt_latency_last_ms"]] == 3000.0  # the last to *complete*
    assert x[COL["rt_latency_ewma_ms"]] == pytest.approx(500.0 + 0.5 * (3000.0 - 500.0))


def test_window_statistics_and_expiry() -> None:
    cf = CausalFeatures(window_s=10.0)
    for i in range(100):  # 1 … 100 ms, all completing around t = 100
        cf.learn_one(call(100.0 + i * 0.001, float(i + 1), tool="t", status="error" if i % 10 == 0 else "ok"))
    x = cf.features("s/0", "t", 2, 101.0, request_bytes=321)
    assert x[COL["inflight"]] == 2 and x[COL["request_bytes"]] == 321
    assert x[COL["rt_window_rate"]] == pytest.approx(100 / 10.0)
    assert x[COL["rt_window_mean_ms"]] == pytest.approx(50.5)
    assert x[COL["rt_window_p95_ms"]] == pytest.approx(95.0, rel=0.1)
    assert x[COL["replica_window_p95_ms"]] == x[COL["rt_window_p95_ms"]]
    assert 0.0 < x[COL["rt_error_ewma"]] < 1.0
    assert x[COL["rt_count"]] == 100
    gone = cf.features("s/0", "t", 0, 111.0)  # every call completed more than window_s ago
    assert gone[COL["rt_window_rate"]] == 0.0
    assert gone[COL["rt_window_mean_ms"]] == gone[COL["rt_latency_ewma_ms"]]  # the EWMA stands in
    other_tool = cf.features("s/0", "u", 0, 111.0)  # cold replica × tool: falls back to the replica
    assert other_tool[COL["rt_count"]] == 0
    assert other_tool[COL["rt_latency_ewma_ms"]] == gone[COL["replica_latency_ewma_ms"]]


def test_time_encodings() -> None:
    monday_6am = 1_790_000_000 - (1_790_000_000 % 86400) + 6 * 3600  # a UTC midnight + 6 h
    x = CausalFeatures().features("s/0", "t", 0, float(monday_6am))
    assert x[COL["hour_sin"]] == pytest.approx(1.0) and x[COL["hour_cos"]] == pytest.approx(0.0, abs=1e-9)
    assert -1.0 <= x[COL["dow_sin"]] <= 1.0


def test_training_rows_filter() -> None:
    assert is_training_row({"method": "tools/call", "replica": "s/0", "latency_ms": 3.0, "cache_hit": False})
    assert not is_training_row({"method": "tools/call", "replica": "s/0", "latency_ms": 3.0, "cache_hit": True})
    assert not is_training_row({"method": "tools/list", "replica": "s/0", "latency_ms": 3.0})
    assert not is_training_row({"method": "tools/call", "replica": None, "latency_ms": 3.0})


def test_a_rows_features_never_change_when_later_events_change(events: list[dict]) -> None:
    X, y, meta = training_frame(events)
    k = 900
    cutoff = events[k]["ts"]
    changed = copy.deepcopy(events)
    rng = np.random.default_rng(0)
    for e in changed[k + 1:]:  # rewrite the future: latencies, failures, load, tools
        e["latency_ms"] = float(rng.uniform(0, 5000))
        e["status"] = "error"
        e["inflight"] = int(rng.integers(0, 50))
        e["tool"] = "another"
    changed.append(call(cutoff + 0.5, 1.0))
    X2, _, _ = training_frame(changed)
    np.testing.assert_array_equal(X[: k + 1], X2[: k + 1])
    assert not np.array_equal(X[k + 1:], X2[k + 1: len(X)])  # the rewrite did matter to later rows


def test_offline_frame_equals_a_live_instance_fed_in_completion_order(events: list[dict]) -> None:
    X, y, meta = training_frame(events)
    assert X.dtype == np.float32 and X.shape == (len(events), len(FEATURE_NAMES))
    np.testing.assert_array_equal(y, [e["latency_ms"] for e in events])
    # The worker sees a call when it finishes: merge "call finished" and "route a call" by time.
    live = CausalFeatures()
    finished = [(e["ts"] + e["latency_ms"] / 1000.0, i) for i, e in enumerate(events)]
    heapq.heapify(finished)
    for i, e in enumerate(events):
        while finished and finished[0][0] < e["ts"]:
            live.learn_one(events[heapq.heappop(finished)[1]])
        vector = np.asarray(live.features(e["replica"], e["tool"], e["inflight"], e["ts"], e["request_bytes"]),
                            dtype=np.float32)
        np.testing.assert_array_equal(vector, X[i], err_msg=f"row {i}")
        assert live.ewma_of(e["replica"], e["tool"]) == pytest.approx(meta.ewma[i], rel=1e-6)
        assert live.last_of(e["replica"], e["tool"]) == pytest.approx(meta.last[i], rel=1e-6)


def test_a_live_instance_that_heard_of_calls_early_still_answers_point_in_time(events: list[dict]) -> None:
    X, _, _ = training_frame(events)
    live = CausalFeatures()
    for e in reversed(events):  # everything known up front, in the worst order
        live.learn_one(e)
    for i in range(0, len(events), 37):
        e = events[i]
        vector = live.features(e["replica"], e["tool"], e["inflight"], e["ts"], e["request_bytes"])
        np.testing.assert_array_equal(np.asarray(vector, dtype=np.float32), X[i])
