"""What every registered policy promises, checked on each of them."""

from __future__ import annotations

import random

import pytest
from _routing_fakes import FakeReplica, observe, replicas, req

from only1mcp import settings
from only1mcp.proxy.routing import POLICIES, make_policy

ALL_OPTIONS = {"fallback_policy": "p2c_ewma", "hash_key": "session", "hash_load_factor": 1.25}
# "weighted" twice: once falling back (no weights), once routing by weights; "learned" three times:
# falling back, by published weights, by predicted latency curves.
CASES = [*sorted(POLICIES), "weighted+weights", "learned+weights", "learned+curves"]


def build(case: str, seed: int = 7):
    name = case.split("+")[0]
    policy = make_policy(name, rng=random.Random(seed), **ALL_OPTIONS)
    if case == "weighted+weights":
        policy.set_weights({"r0": 1.0, "r1": 2.0, "r3": 0.5}, valid_until=1e9, model_version="m1")
    if case == "learned+weights":
        policy.apply("tool", {"r0": 1.0, "r1": 2.0, "r3": 0.5}, {}, valid_until=1e9, model_version="m1")
    if case == "learned+curves":
        policy.apply(None, {}, {"r0": [5.0, 9.0], "r1": [3.0], "r2": [4.0, 6.0, 20.0]}, valid_until=1e9,
                     model_version="m2")
    return name, policy


def varied_candidates() -> list[FakeReplica]:
    cands = replicas(4)
    for i, c in enumerate(cands):
        c.inflight = i % 3
        observe(c, 0.01 * (i + 1), now=1.0)
    return cands


def requests(count: int) -> list:
    return [req(session_id=f"s{i % 7}" if i % 5 else None, args_hash=f"a{i % 3}", now=2.0 + i * 0.01)
            for i in range(count)]


def test_the_registry_matches_the_names_settings_accept() -> None:
    assert set(POLICIES) == set(settings.POLICIES)


@pytest.mark.parametrize("case", CASES)
def test_picks_one_of_the_candidates_and_says_why(case: str) -> None:
    name, policy = build(case)
    assert policy.name == name
    cands = varied_candidates()
    for request in requests(60):
        decision = policy.choose(cands, request)
        assert any(decision.replica is c for c in cands)
        assert decision.policy == name
        assert isinstance(decision.reason, str) and decision.reason.strip()


@pytest.mark.parametrize("case", CASES)
def test_works_with_a_single_candidate(case: str) -> None:
    _, policy = build(case)
    only = [FakeReplica("r1", inflight=5)]
    for request in requests(10):
        decision = policy.choose(only, request)
        assert decision.replica is only[0] and decision.reason


@pytest.mark.parametrize("case", CASES)
def test_is_deterministic_with_a_seeded_rng(case: str) -> None:
    runs = []
    for _ in range(2):
        _, policy = build(case, seed=1234)
        cands = varied_candidates()
        runs.append([(d.replica.id, d.reason) for d in (policy.choose(cands, r) for r in requests(80))])
    assert runs[0] == runs[1]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_candidates_without_stats_are_accepted(name: str) -> None:
    class Bare:  # what the pool hands over before it keeps stats
        def __init__(self, rid: str) -> None:
            self.id, self.inflight = rid, 0

    cands = [Bare("a"), Bare("b")]
    assert make_policy(name).choose(cands, req("s")).replica in cands


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_unknown_options_are_ignored(name: str) -> None:
    policy = make_policy(name, rng=random.Random(1), not_an_option=True, **ALL_OPTIONS)
    assert policy.name == name
