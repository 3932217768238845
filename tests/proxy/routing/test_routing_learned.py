"""learned: per-tool entries, then the server's, then the fallback; load-aware curves; an exploration floor."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest
from _routing_fakes import FakeReplica, replicas

from only1mcp.proxy.routing import RouteRequest, build_policy, make_policy
from only1mcp.settings import ReplicaSettings, ServerSettings


def learned(**options):
    options.setdefault("exploration", 0.0)
    return make_policy("learned", rng=random.Random(11), fallback_policy="round_robin", **options)


def call(tool: str = "search", now: float = 1.0) -> RouteRequest:
    return RouteRequest("srv", "tools/call", tool, now=now)


def test_the_tool_entry_beats_the_server_entry() -> None:
    policy = learned()
    policy.apply(None, {"r0": 1.0}, {}, valid_until=100.0, model_version="srv-1", source="tool_ewma")
    policy.apply("search", {"r1": 1.0}, {}, valid_until=100.0, model_version="tool-1", source="latency_model")
    cands = replicas(3)
    search = [policy.choose(cands, call("search")) for _ in range(50)]
    assert {d.replica.id for d in search} == {"r1"}
    assert search[0].detail["scope"] == "tool" and search[0].model_version == "tool-1"
    assert search[0].detail["source"] == "latency_model"
    other = [policy.choose(cands, call("fetch")) for _ in range(50)]
    assert {d.replica.id for d in other} == {"r0"}  # no entry of its own: the server's
    assert other[0].detail["scope"] == "server" and "learned (server)" in other[0].reason


def test_a_stale_tool_entry_gives_way_to_the_server_and_both_stale_fall_back_with_the_reason() -> None:
    policy = learned()
    policy.apply("search", {"r1": 1.0}, {}, valid_until=10.0, model_version="t1")
    policy.apply(None, {"r0": 1.0}, {}, valid_until=20.0, model_version="s1")
    cands = replicas(2)
    decision = policy.choose(cands, call(now=15.0))
    assert decision.replica.id == "r0" and decision.detail["scope"] == "server"
    assert "weights for tool search of model t1 stale since" in decision.reason
    decision = policy.choose(cands, call(now=25.0))
    assert decision.detail["fallback_reason"] is not None and decision.model_version is None
    assert "t1 stale since" in decision.reason and "server weights of model s1 stale since" in decision.reason
    assert "(5.0s ago)" in decision.reason
    assert "fell back to round_robin" in decision.reason
    # the round robin fallback alternates
    assert {policy.choose(cands, call(now=25.0)).replica.id for _ in range(4)} == {"r0", "r1"}


def test_no_weights_yet_falls_back_and_says_so() -> None:
    policy = learned()
    decision = policy.choose(replicas(2), call())
    assert decision.reason.startswith("no weights yet; fell back to round_robin")
    assert decision.detail["fallback_reason"] == "no weights yet"
    assert [c["replica"] for c in decision.detail["candidates"]] == ["r0", "r1"]
    policy.apply("fetch", {"r0": 1.0}, {}, valid_until=100.0)
    assert "no weights yet for tool search or the server" in policy.choose(replicas(2), call()).reason


def test_an_entry_that_names_no_ready_replica_falls_back() -> None:
    policy = learned()
    policy.apply(None, {"gone": 5.0, "r0": 0.0}, {}, valid_until=100.0, model_version="m3")
    decision = policy.choose(replicas(2), call())
    assert "server weights (model m3) name no ready replica" in decision.reason
    assert "fell back" in decision.reason


def test_never_picks_a_replica_that_is_not_a_candidate() -> None:
    policy = learned(exploration=0.05)
    policy.apply(None, {"gone": 1000.0, "r0": 1.0, "r2": 1.0}, {"gone": [0.0]}, valid_until=100.0)
    policy.apply("search", {"gone": 1000.0, "r1": 0.001}, {}, valid_until=100.0)
    cands = replicas(3)
    for tool in ("search", "fetch"):
        for _ in range(500):
            decision = policy.choose(cands, call(tool))
            assert any(decision.replica is c for c in cands)
    # curves for a replica that is gone only: nothing to go by
    policy.apply("search", {}, {"gone": [1.0]}, valid_until=100.0)
    assert "name no ready replica" in policy.choose(cands, call()).reason


def test_the_exploration_floor_holds() -> None:
    policy = learned(exploration=0.1)
    policy.apply(None, {"r0": 1.0}, {}, valid_until=100.0)
    cands = replicas(3)
    decision = policy.choose(cands, call())
    probabilities = {c["replica"]: c["probability"] for c in decision.detail["candidates"]}
    assert probabilities == pytest.approx({"r0": 0.8, "r1": 0.1, "r2": 0.1})
    counts = Counter(policy.choose(cands, call()).replica.id for _ in range(10_000))
    expected = {"r0": 8000, "r1": 1000, "r2": 1000}
    chi2 = sum((counts[r] - e) ** 2 / e for r, e in expected.items())
    assert chi2 < 13.8, counts  # p = 0.001 with 2 degrees of freedom


def test_probabilities_follow_the_published_weights_above_the_floor() -> None:
    policy = learned(exploration=0.05)
    policy.apply(None, {"r0": 1.0, "r1": 3.0}, {}, valid_until=100.0)
    rows = policy.choose(replicas(2), call()).detail["candidates"]
    assert [r["probability"] for r in rows] == pytest.approx([0.05 + 0.9 * 0.25, 0.05 + 0.9 * 0.75])
    assert math.fsum(r["probability"] for r in rows) == pytest.approx(1.0)
    assert [r["weight"] for r in rows] == [1.0, 3.0]


def test_curves_steer_away_from_a_loaded_replica() -> None:
    policy = learned(temperature=0.3)
    # Same speed idle, but r0's latency climbs steeply with its queue.
    policy.apply(None, {}, {"r0": [10.0, 40.0, 90.0, 200.0], "r1": [10.0, 12.0, 14.0, 16.0]}, valid_until=100.0,
                 model_version="lat-2", source="latency_model")
    idle = [FakeReplica("r0"), FakeReplica("r1")]
    counts = Counter(policy.choose(idle, call()).replica.id for _ in range(2000))
    assert 800 < counts["r0"] < 1200, counts  # equal cost: an even split
    loaded = [FakeReplica("r0", inflight=3), FakeReplica("r1", inflight=1)]
    decision = policy.choose(loaded, call())
    rows = {r["replica"]: r for r in decision.detail["candidates"]}
    assert rows["r0"]["predicted_ms"] == 200.0 and rows["r1"]["predicted_ms"] == 12.0
    assert rows["r0"]["inflight"] == 3
    assert rows["r1"]["weight"] == 1.0 and rows["r0"]["weight"] < 1e-20
    counts = Counter(policy.choose(loaded, call()).replica.id for _ in range(2000))
    assert counts["r0"] == 0, counts
    # Past the curve's end the last value grows with the calls in flight, as a queue: × (inflight + 1) / levels.
    beyond = [FakeReplica("r0", inflight=7), FakeReplica("r1", inflight=3)]
    rows = {r["replica"]: r for r in policy.choose(beyond, call()).detail["candidates"]}
    assert rows["r0"]["predicted_ms"] == 400.0 and rows["r1"]["predicted_ms"] == 16.0


def test_a_one_value_curve_weighs_like_p2c_cost() -> None:
    policy = learned(temperature=0.1, exploration=0.0)
    policy.apply(None, {}, {"r0": [10.0], "r1": [10.0]}, valid_until=100.0, source="tool_ewma")
    busy = [FakeReplica("r0", inflight=4), FakeReplica("r1", inflight=0)]
    rows = {r["replica"]: r for r in policy.choose(busy, call()).detail["candidates"]}
    assert rows["r0"]["predicted_ms"] == 50.0 and rows["r1"]["predicted_ms"] == 10.0
    assert Counter(policy.choose(busy, call()).replica.id for _ in range(500))["r1"] == 500


def test_curve_weights_are_a_softmax_relative_to_the_best() -> None:
    policy = learned(temperature=0.5)
    policy.apply(None, {"r0": 99.0}, {"r0": [20.0], "r1": [10.0]}, valid_until=100.0)  # curves win over weights
    rows = {r["replica"]: r for r in policy.choose(replicas(3), call()).detail["candidates"]}
    assert rows["r1"]["weight"] == pytest.approx(1.0)
    assert rows["r0"]["weight"] == pytest.approx(math.exp(-(20.0 / 10.0 - 1.0) / 0.5))
    assert rows["r2"]["weight"] == 0.0 and rows["r2"]["predicted_ms"] is None  # no curve: no weight


def test_a_zero_prediction_does_not_divide_by_zero() -> None:
    policy = learned()
    policy.apply(None, {}, {"r0": [0.0], "r1": [0.0], "r2": [5.0]}, valid_until=100.0)
    rows = {r["replica"]: r for r in policy.choose(replicas(3), call()).detail["candidates"]}
    assert rows["r0"]["weight"] == rows["r1"]["weight"] == 1.0 and rows["r2"]["weight"] == 0.0


def test_the_floor_is_capped_at_an_even_split() -> None:
    policy = learned(exploration=0.6)  # more than 1/n: every candidate gets 1/n
    policy.apply(None, {"r0": 1.0}, {}, valid_until=100.0)
    rows = policy.choose(replicas(2), call()).detail["candidates"]
    assert [r["probability"] for r in rows] == pytest.approx([0.5, 0.5])


def test_only_tool_calls_use_tool_entries() -> None:
    policy = learned()
    policy.apply("search", {"r1": 1.0}, {}, valid_until=100.0)
    decision = policy.choose(replicas(2), RouteRequest("srv", "prompts/get", "search", now=1.0))
    assert "fell back" in decision.reason


def test_broken_values_are_refused() -> None:
    policy = learned()
    with pytest.raises(ValueError):
        policy.apply(None, {"r0": -1.0}, {}, valid_until=100.0)
    with pytest.raises(ValueError):
        policy.apply(None, {"r0": float("nan")}, {}, valid_until=100.0)
    with pytest.raises(ValueError):
        policy.apply(None, {}, {"r0": []}, valid_until=100.0)
    with pytest.raises(ValueError):
        make_policy("learned", fallback_policy="weighted")
    with pytest.raises(ValueError):
        make_policy("learned", temperature=0.0)


def test_apply_swaps_one_table_and_snapshot_reports_it() -> None:
    policy = learned()
    policy.apply("search", {"r0": 1.0}, {"r1": [3.0]}, valid_until=40.0, model_version="m9", source="tool_ewma")
    before = policy._table
    policy.apply(None, {"r1": 1.0}, {}, valid_until=50.0, model_version="m9")
    assert policy._table is not before and before.server is None  # the old table is untouched
    snap = policy.snapshot(now=10.0)
    assert snap["fallback"] == "round_robin"
    assert snap["tools"]["search"]["valid_for_s"] == 30.0 and snap["tools"]["search"]["source"] == "tool_ewma"
    assert snap["tools"]["search"]["replicas"] == ["r0", "r1"] and snap["tools"]["search"]["curves"] is True
    assert snap["server"]["model_version"] == "m9"
    policy.clear()
    assert policy.snapshot(now=10.0)["server"] is None


def test_the_factory_passes_exploration_and_temperature() -> None:
    settings = ServerSettings(name="s", namespace="s", replicas=(ReplicaSettings(url="http://x/mcp"),), policy="learned",
                              fallback_policy="least_inflight", exploration=0.2, temperature=0.7, sticky=True)
    policy = build_policy(settings)
    assert policy.name == "sticky+learned"
    assert policy.inner.exploration == 0.2 and policy.inner.temperature == 0.7
    assert policy.inner.fallback.name == "least_inflight"


def test_seeded_choices_are_reproducible() -> None:
    runs = []
    for _ in range(2):
        policy = learned(exploration=0.05)
        policy.apply(None, {}, {"r0": [5.0, 9.0], "r1": [6.0, 7.0]}, valid_until=100.0)
        cands = [FakeReplica("r0", inflight=1), FakeReplica("r1")]
        runs.append([policy.choose(cands, call()).replica.id for _ in range(100)])
    assert runs[0] == runs[1]
