"""The specialisation learner (models/routing/tool_ewma.py) and predictions → weights (weights.py)."""

from __future__ import annotations

import math

import pytest

from only1mcp.events import RoutingWeights
from only1mcp.models.routing.tool_ewma import ToolEwma, counts
from only1mcp.models.routing.weights import (
    clean_curve, decisions_for, error_adjusted, server_curves, softmax_weights,
)


def call(replica: str, latency: float, tool: str = "A", status: str = "ok", server: str = "s", ts: float = 1000.0,
         **extra: object) -> dict[str, object]:
    return {"server": server, "replica": replica, "tool": tool, "method": "tools/call", "latency_ms": latency,
            "status": status, "cache_hit": False, "ts": ts, **extra}


def test_ewma_follows_latency_and_errors() -> None:
    learner = ToolEwma(alpha=0.5, min_samples=1)
    for latency in (10.0, 20.0, 20.0):
        learner.learn_one(call("r0", latency))
    lat, err, n = learner.predict("s", "A")["r0"]
    assert lat == pytest.approx(17.5) and err == 0.0 and n == 3  # 10 → 15 → 17.5
    learner.learn_one(call("r0", 100.0, status="timeout"))
    lat, err, n = learner.predict("s", "A")["r0"]
    assert lat == pytest.approx(58.75) and err == pytest.approx(0.5) and n == 4  # latency of a timeout counts


def test_only_upstream_tool_calls_count() -> None:
    learner = ToolEwma(alpha=0.1, min_samples=1)
    ignored = [
        {**call("r0", 1.0), "method": "tools/list"},
        call("r0", 1.0, cache_hit=True),
        call("r0", 1.0, status="unavailable"), call("r0", 1.0, status="rejected"), call("r0", 1.0, status="cancelled"),
        {**call("r0", 1.0), "replica": None}, {**call("r0", 1.0), "server": None},
    ]
    for event in ignored:
        assert not counts(event) and not learner.learn_one(event)
    assert learner.predict("s", "A") == {} and learner.learned == 0
    assert learner.learn_one(call("r0", 5.0, status="error"))
    assert learner.predict("s", "A")["r0"] == (5.0, 1.0, 1)


def test_min_samples_and_per_tool_keys() -> None:
    learner = ToolEwma(alpha=0.1, min_samples=3)
    for i in range(3):
        learner.learn_one(call("r0", 10.0, tool="A"))
        if i < 2:
            learner.learn_one(call("r1", 10.0, tool="A"))
        learner.learn_one(call("r1", 5.0, tool="B"))
    assert set(learner.predict("s", "A")) == {"r0"}  # r1 has only 2 calls on A
    assert set(learner.predict("s", "B")) == {"r1"}
    assert learner.predict("other", "A") == {} and learner.predict("s", None) == {}


def test_state_round_trip_and_prune() -> None:
    learner = ToolEwma(alpha=0.2, min_samples=2)
    for i in range(5):
        learner.learn_one(call("r0", 10.0 + i, ts=1000.0 + i))
        learner.learn_one(call("r1", 30.0, tool=None, ts=2000.0, status="error"))
    copy = ToolEwma.from_bytes(learner.state_to_bytes())
    assert copy.predict("s", "A") == learner.predict("s", "A") and copy.predict("s", None) == learner.predict("s", None)
    assert (copy.alpha, copy.min_samples, copy.learned) == (0.2, 2, 10)
    copy.learn_one(call("r0", 50.0, ts=1005.0))
    assert copy.predict("s", "A") != learner.predict("s", "A")  # independent state
    with pytest.raises(ValueError):
        ToolEwma.from_bytes(b'{"v": 99}')
    assert learner.prune(now=1000.0 + learner.ttl_s + 10) == 1  # r0 on A: last call at 1004
    assert learner.predict("s", "A") == {} and set(learner.predict("s", None)) == {"r1"}


def test_bad_parameters() -> None:
    with pytest.raises(ValueError):
        ToolEwma(alpha=0.0)
    with pytest.raises(ValueError):
        ToolEwma(min_samples=0)


# -- weights ---------------------------------------------------------------------------------------

def test_softmax_weights_is_the_proxys_formula() -> None:
    weights = softmax_weights({"a": 10.0, "b": 20.0, "c": 10.0}, temperature=0.5)
    assert weights["a"] == weights["c"] == 1.0
    assert weights["b"] == pytest.approx(math.exp(-(20 / 10 - 1) / 0.5))
    assert softmax_weights({}, 0.3) == {}
    zero = softmax_weights({"a": 0.0, "b": 1.0}, 0.3)  # no division by zero
    assert zero["a"] == 1.0 and 0 < zero["b"] < 1e-10
    assert softmax_weights({"a": 1.0, "b": 1e9}, 0.01)["b"] > 0  # underflow floored, never 0
    with pytest.raises(ValueError):
        softmax_weights({"a": 1.0}, 0.0)


def test_error_adjusted_makes_an_erroring_replica_look_slow() -> None:
    assert error_adjusted(10.0, 0.0) == 10.0
    assert error_adjusted(10.0, 0.5) == 20.0
    assert error_adjusted(10.0, 1.0) == pytest.approx(200.0)  # floored at a 5 % success rate


def test_clean_curve() -> None:
    assert clean_curve([5.0, 3.0, 8.0]) == [5.0, 5.0, 8.0]  # load never makes a call faster
    assert clean_curve([-2.0, 1.0]) == [0.0, 1.0]
    assert clean_curve([1.0, float("nan")]) is None and clean_curve([]) is None


def test_decisions_per_tool_and_server_wide() -> None:
    curves = {("s", "A"): {"r0": [10.0], "r1": [50.0], "r2": [12.0]},
              ("s", "B"): {"r0": [20.0], "r1": [4.0], "r2": [22.0]},
              ("s", "C"): {"r0": [7.0]},  # one replica: no per-tool record, but counts server-wide
              ("t", "X"): {"q0": [1.0, float("inf")], "q1": [2.0]}}  # q0's curve is broken: dropped
    records = decisions_for(curves, now=1000.0, valid_for=10.0, temperature=0.3, model_version="v1", source="tool_ewma")
    by = {(r.server, r.tool): r for r in records}
    assert set(by) == {("s", "A"), ("s", "B"), ("s", None)}
    a, b, wide = by[("s", "A")], by[("s", "B")], by[("s", None)]
    assert max(a.weights, key=a.weights.get) == "r0" and min(a.weights, key=a.weights.get) == "r1"
    assert max(b.weights, key=b.weights.get) == "r1"
    assert a.predicted_ms == {"r0": [10.0], "r1": [50.0], "r2": [12.0]}
    assert wide.predicted_ms["r0"] == [pytest.approx((10 + 20 + 7) / 3)] and wide.predicted_ms["r1"] == [27.0]
    for record in records:
        assert record.valid_until == 1010.0 and record.ts == 1000.0
        assert record.model_version == "v1" and record.source == "tool_ewma"
        assert RoutingWeights.from_json(record.to_json()) == record
    assert len({r.decision_id for r in records}) == len(records)


def test_server_curves_pads_shorter_curves() -> None:
    curves = {("s", "A"): {"r0": [10.0, 20.0, 30.0]}, ("s", "B"): {"r0": [2.0]}}
    assert server_curves(curves, "s") == {"r0": [6.0, 11.0, 16.0]}
    assert server_curves(curves, "nope") == {}


def test_split_gives_the_model_what_it_covers_and_fills_the_rest_from_the_baseline() -> None:
    from only1mcp.models.routing.weights import split

    baseline = {("s", "A"): {"r0": [1.0], "r1": [2.0]}, ("s", "B"): {"r0": [1.0], "r1": [2.0]},
                ("t", "X"): {"q0": [1.0], "q1": [2.0]}, ("t", "Y"): {"q0": [1.0], "q1": [2.0]}}
    model = {("s", "A"): {"r0": [1.0, 2.0], "r1": [3.0, 4.0]}, ("s", "B"): {"r0": [1.5, 2.5]},  # B lacks r1
             ("t", "X"): {"q0": [1.0], "q1": [1.0], "q2": [9.0]}}
    mine, rest, servers = split(model, baseline)
    assert set(mine) == {("s", "A"), ("t", "X")} and set(rest) == {("s", "B"), ("t", "Y")} and servers == set()
    assert mine[("s", "A")] == model[("s", "A")]  # the model's curves win where it has them
    assert mine[("t", "X")] == {"q0": [1.0], "q1": [1.0], "q2": [9.0]}  # and a replica only it knows stays

    model[("s", "B")]["r2"] = [7.0]  # now two replicas: the model takes B, r1 keeps the baseline's curve
    mine, rest, _ = split(model, baseline)
    assert mine[("s", "B")] == {"r0": [1.5, 2.5], "r1": [2.0], "r2": [7.0]} and ("s", "B") not in rest
    assert split({}, baseline) == ({}, baseline, set())


def test_a_replica_short_of_min_samples_is_priced_between_the_best_known_cost_and_its_own() -> None:
    """Optimism, shrunk by what little was seen: a replica seen on a tool n < min_samples times costs
    (n × own + (min_samples - n) × best) / min_samples, so a fast-looking one is tried until
    measured and a 10x slow one stops being tried after a call or two; a replica never seen there
    is not invented."""
    learner = ToolEwma(alpha=0.5, min_samples=4)
    for _ in range(4):
        learner.learn_one(call("r0", 200.0))
        learner.learn_one(call("r1", 100.0))
    learner.learn_one(call("r2", 20.0))  # one call: fast, but one call proves little
    learner.learn_one(call("r3", 1000.0))  # one call, 10x slow
    curves = learner.curves()[("s", "A")]
    assert curves == {"r0": [200.0], "r1": [100.0], "r2": [80.0], "r3": [325.0]}
    weights = softmax_weights({rid: c[0] for rid, c in curves.items()}, 0.1)
    assert max(weights, key=weights.get) == "r2" and weights["r3"] < 1e-9  # tried / left to the floor
    assert set(learner.predict("s", "A")) == {"r0", "r1"}  # what it has measured is unchanged
    for _ in range(3):
        learner.learn_one(call("r2", 20.0))
    assert learner.curves()[("s", "A")]["r2"] == [20.0]  # measured now: its own EMA
    only = ToolEwma(min_samples=3)
    only.learn_one(call("r0", 5.0))
    assert only.curves() == {}  # nothing measured on the tool yet: no record (the fallback routes)


def test_learn_many_is_learn_one_inlined() -> None:
    statuses = ("ok", "error", "timeout")
    events = [call(f"r{i % 3}", float(i % 17), tool=f"t{i % 2}", status=statuses[i % 3], ts=1000.0 + i)
              for i in range(300)]
    events += [{**call("r0", 1.0), "method": "tools/list"}, call("r0", 1.0, cache_hit=True),
               call("r0", 1.0, status="cancelled"), {**call("r0", 1.0), "replica": ""}]
    one, many = ToolEwma(0.3, 2), ToolEwma(0.3, 2)
    for event in events:
        one.learn_one(event)
    assert many.learn_many(events) == 300
    assert one.state_to_bytes() == many.state_to_bytes()
