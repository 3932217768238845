"""weighted: follows the learned weights while fresh, falls back otherwise."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from _routing_fakes import FakeReplica, observe, replicas, req

from only1mcp.proxy.routing import make_policy


def weighted(**options):
    return make_policy("weighted", rng=random.Random(9), **options)


def test_picks_follow_the_weights() -> None:
    policy = weighted()
    policy.set_weights({"r0": 1.0, "r1": 2.0, "r2": 3.0, "gone": 50.0}, valid_until=100.0, model_version="v7")
    cands = replicas(4)  # r3 has no weight
    counts = Counter(policy.choose(cands, req(now=1.0)).replica.id for _ in range(6000))
    assert "r3" not in counts
    expected = {"r0": 1000, "r1": 2000, "r2": 3000}
    chi2 = sum((counts[r] - e) ** 2 / e for r, e in expected.items())
    assert chi2 < 13.8, counts  # p = 0.001 with 2 degrees of freedom


def test_the_decision_names_the_model() -> None:
    policy = weighted()
    policy.set_weights({"r0": 1.0, "r1": 3.0}, valid_until=100.0, model_version="v7")
    decision = policy.choose(replicas(2), req(now=1.0))
    assert decision.model_version == "v7" and decision.policy == "weighted"
    assert "by model v7" in decision.reason and "p=0." in decision.reason


def test_stale_weights_fall_back() -> None:
    policy = weighted(fallback_policy="least_inflight")
    policy.set_weights({"r0": 1.0}, valid_until=10.0, model_version="v7")
    cands = [FakeReplica("r0", inflight=5), FakeReplica("r1", inflight=0)]
    assert policy.choose(cands, req(now=9.9)).replica.id == "r0"
    decision = policy.choose(cands, req(now=12.5))
    assert decision.replica.id == "r1" and decision.model_version is None
    assert decision.reason.startswith("weights of model v7 stale since t=10.0 (2.5s ago); fell back to least_inflight")


def test_missing_weights_fall_back_to_p2c_by_default() -> None:
    policy = weighted()
    fast, slow = FakeReplica("fast"), FakeReplica("slow")
    observe(fast, 0.01, now=0.0)
    observe(slow, 0.5, now=0.0)
    decision = policy.choose([fast, slow], req(now=0.0))
    assert decision.replica is fast
    assert decision.reason.startswith("no weights yet; fell back to p2c_ewma: p2c:")


def test_weights_for_no_ready_replica_fall_back() -> None:
    policy = weighted()
    policy.set_weights({"r0": 1.0, "r1": 0.0}, valid_until=100.0, model_version="v8")
    decision = policy.choose([FakeReplica("r1"), FakeReplica("r2")], req(now=1.0))
    assert "model v8 gives no ready replica a positive weight; fell back to p2c_ewma" in decision.reason


def test_new_weights_replace_the_old() -> None:
    policy = weighted()
    policy.set_weights({"r0": 1.0}, valid_until=100.0, model_version="a")
    policy.set_weights({"r1": 1.0}, valid_until=200.0, model_version="b")
    decision = policy.choose(replicas(2), req(now=150.0))
    assert decision.replica.id == "r1" and decision.model_version == "b"
    assert policy.snapshot() == {"model_version": "b", "valid_until": 200.0, "weights": {"r1": 1.0},
                                 "fallback": "p2c_ewma"}


def test_bad_weights_and_a_self_fallback_are_refused() -> None:
    policy = weighted()
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises(ValueError):
            policy.set_weights({"r0": bad}, valid_until=1.0, model_version="x")
    with pytest.raises(ValueError):
        weighted(fallback_policy="weighted")


def test_the_fallback_gets_the_hash_options() -> None:
    policy = weighted(fallback_policy="consistent_hash", hash_key="arguments", hash_load_factor=3.0)
    assert policy.fallback.hash_key == "arguments" and policy.fallback.load_factor == 3.0


def test_the_decision_carries_a_structured_detail() -> None:
    policy = weighted(fallback_policy="round_robin")
    assert policy.choose(replicas(2), req(now=1.0)).detail["fallback_reason"] == "no weights yet"
    policy.set_weights({"r0": 1.0, "r1": 3.0}, valid_until=100.0, model_version="v7")
    detail = policy.choose(replicas(2), req(now=1.0)).detail
    assert detail["model_version"] == "v7" and detail["fallback_reason"] is None
    assert [row["probability"] for row in detail["candidates"]] == pytest.approx([0.25, 0.75])
