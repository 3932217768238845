"""consistent_hash: affinity, minimal remapping, bounded load."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from _routing_fakes import FakeReplica, replicas, req

from only1mcp.proxy.routing import make_policy
from only1mcp.proxy.routing.consistent_hash import HashRing

KEYS = [f"session-{i}" for i in range(2000)]


def mapping(policy, cands) -> dict[str, str]:
    return {k: policy.choose(cands, req(session_id=k)).replica.id for k in KEYS}


def test_the_same_key_goes_to_the_same_replica() -> None:
    cands = replicas(5)
    first = mapping(make_policy("consistent_hash"), cands)
    again = mapping(make_policy("consistent_hash"), list(reversed(cands)))  # fresh policy, other order
    assert first == again
    share = Counter(first.values())
    assert set(share) == {c.id for c in cands}
    assert all(250 <= n <= 550 for n in share.values()), share  # ~400 each with 100 virtual nodes


def test_removing_a_replica_moves_only_its_keys() -> None:
    cands = replicas(5)
    policy = make_policy("consistent_hash")
    before = mapping(policy, cands)
    after = mapping(policy, [c for c in cands if c.id != "r2"])
    moved = {k for k in KEYS if before[k] != after[k]}
    assert moved == {k for k in KEYS if before[k] == "r2"}
    assert 0.1 < len(moved) / len(KEYS) < 0.3  # ~1/n
    assert mapping(policy, cands) == before  # and they come back when it does


def test_hash_by_arguments_ignores_the_session() -> None:
    policy = make_policy("consistent_hash", hash_key="arguments")
    cands = replicas(4)
    picks = {policy.choose(cands, req(session_id=f"s{i}", args_hash="abc123")).replica.id for i in range(30)}
    assert len(picks) == 1
    spread = {policy.choose(cands, req(args_hash=f"h{i}")).replica.id for i in range(200)}
    assert len(spread) == 4


def test_a_replica_at_the_load_cap_is_skipped() -> None:
    cands = replicas(3)
    policy = make_policy("consistent_hash", hash_load_factor=1.25)
    home = policy.choose(cands, req(session_id="hot")).replica
    assert "its home" in policy.choose(cands, req(session_id="hot")).reason
    home.inflight = 4  # cap = ceil(1.25 × (4 + 1) / 3) = 3
    decision = policy.choose(cands, req(session_id="hot"))
    assert decision.replica is not home
    assert f"home {home.id} is at the load cap (4 in flight ≥ 3)" in decision.reason
    loose = make_policy("consistent_hash", hash_load_factor=10.0)
    assert loose.choose(cands, req(session_id="hot")).replica is home


def test_one_hot_key_never_loads_a_replica_past_the_bound() -> None:
    cands = replicas(4)
    factor = 1.25
    policy = make_policy("consistent_hash", hash_load_factor=factor)
    for placed in range(1, 201):  # 200 concurrent calls of the same key
        policy.choose(cands, req(session_id="hot")).replica.inflight += 1
        assert max(c.inflight for c in cands) <= math.ceil(factor * placed / len(cands))
    assert min(c.inflight for c in cands) > 0


def test_without_a_key_the_first_candidate_under_the_cap_is_used() -> None:
    policy = make_policy("consistent_hash")
    cands = [FakeReplica("r0", inflight=2), FakeReplica("r1"), FakeReplica("r2")]
    decision = policy.choose(cands, req(session_id=None, args_hash="ignored"))
    assert decision.replica.id == "r1"  # r0 is at ceil(1.25 × 3 / 3) = 2
    assert decision.reason.startswith("consistent_hash: no session id to hash")


def test_reasons_never_show_the_session_id() -> None:
    policy = make_policy("consistent_hash")
    assert "secret-session" not in policy.choose(replicas(3), req(session_id="secret-session")).reason


def test_the_ring_walks_every_replica_once_from_the_home() -> None:
    ring = HashRing(["a", "b", "c"], vnodes=50)
    walk = list(ring.walk(12345))
    assert sorted(walk) == ["a", "b", "c"]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        make_policy("consistent_hash", hash_key="cookie")
    with pytest.raises(ValueError):
        make_policy("consistent_hash", hash_load_factor=0.5)
