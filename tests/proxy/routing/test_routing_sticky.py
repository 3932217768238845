"""Sticky sessions around any policy, and build_policy from settings."""

from __future__ import annotations

import random

import pytest
from _routing_fakes import replicas, req

from only1mcp.proxy.routing import ReplicaStats, Sticky, build_policy, make_policy
from only1mcp.proxy.routing.consistent_hash import ConsistentHash
from only1mcp.proxy.routing.weighted import Weighted
from only1mcp.settings import ReplicaSettings, ServerSettings


def sticky(max_sessions: int = 1000) -> Sticky:
    return Sticky(make_policy("random", rng=random.Random(4)), max_sessions=max_sessions)


def test_a_session_stays_on_its_replica() -> None:
    policy = sticky()
    cands = replicas(4)
    first = policy.choose(cands, req(session_id="a"))
    assert first.reason.startswith(f"sticky: new session, pinned to {first.replica.id}; random:")
    later = [policy.choose(cands, req(session_id="a")) for _ in range(50)]
    assert {d.replica.id for d in later} == {first.replica.id}
    assert later[0].policy == "sticky+random" and later[0].reason == f"sticky: session pinned to {first.replica.id}"
    others = {policy.choose(cands, req(session_id=f"s{i}")).replica.id for i in range(40)}
    assert len(others) > 1  # sessions are still spread by the inner policy


def test_a_session_is_re_pinned_when_its_replica_goes() -> None:
    policy = sticky()
    cands = replicas(3)
    old = policy.choose(cands, req(session_id="a")).replica
    rest = [c for c in cands if c is not old]
    moved = policy.choose(rest, req(session_id="a"))
    assert moved.replica is not old and f"{old.id} is not ready, re-pinned to {moved.replica.id}" in moved.reason
    assert policy.choose(cands, req(session_id="a")).replica is moved.replica  # no move back
    assert policy.pinned("a") == moved.replica.id


def test_calls_without_a_session_are_not_pinned() -> None:
    policy = sticky()
    decision = policy.choose(replicas(3), req())
    assert decision.reason.startswith("no session to pin; random:") and len(policy) == 0


def test_pins_are_bounded_least_recently_used_first() -> None:
    policy = sticky(max_sessions=3)
    cands = replicas(3)
    for s in ("a", "b", "c"):
        policy.choose(cands, req(session_id=s))
    policy.choose(cands, req(session_id="a"))  # a is now the most recent
    policy.choose(cands, req(session_id="d"))
    assert len(policy) == 3 and policy.pinned("b") is None and policy.pinned("a") is not None
    policy.forget("a")
    assert policy.pinned("a") is None and len(policy) == 2


def server(**overrides) -> ServerSettings:
    return ServerSettings(name="s", namespace="s", replicas=(ReplicaSettings(url="http://x"),), **overrides)


def test_build_policy_passes_the_options_and_wraps_sticky() -> None:
    policy = build_policy(server(policy="consistent_hash", sticky=True, hash_key="arguments", hash_load_factor=2.0))
    assert isinstance(policy, Sticky) and isinstance(policy.inner, ConsistentHash)
    assert policy.inner.hash_key == "arguments" and policy.inner.load_factor == 2.0
    plain = build_policy(server(policy="weighted", fallback_policy="least_inflight"), rng=random.Random(1))
    assert isinstance(plain, Weighted) and plain.fallback.name == "least_inflight"
    assert build_policy(server()).name == "p2c_ewma"


def test_build_policy_uses_the_given_rng() -> None:
    picks = []
    for _ in range(2):
        policy = build_policy(server(policy="p2c_ewma"), rng=random.Random(8))
        cands = replicas(5)
        for c in cands:
            c.stats = ReplicaStats()
        picks.append([policy.choose(cands, req()).replica.id for _ in range(30)])
    assert picks[0] == picks[1]


def test_max_sessions_must_be_positive() -> None:
    with pytest.raises(ValueError):
        sticky(max_sessions=0)
