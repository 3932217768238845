"""random, least_inflight and p2c_ewma."""

from __future__ import annotations

import heapq
import random
import re
from collections import Counter

from _routing_fakes import FakeReplica, observe, replicas, req

from only1mcp.proxy.routing import make_policy


def test_random_is_uniform() -> None:
    policy = make_policy("random", rng=random.Random(3))
    cands = replicas(3)
    counts = Counter(policy.choose(cands, req()).replica.id for _ in range(3000))
    assert all(850 <= counts[c.id] <= 1150 for c in cands), counts


def test_least_inflight_picks_the_idle_one() -> None:
    policy = make_policy("least_inflight", rng=random.Random(1))
    cands = [FakeReplica("r0", inflight=3), FakeReplica("r1", inflight=0), FakeReplica("r2", inflight=2)]
    decisions = [policy.choose(cands, req()) for _ in range(50)]
    assert {d.replica.id for d in decisions} == {"r1"}
    assert "r1 has 0 in flight" in decisions[0].reason


def test_least_inflight_breaks_ties_at_random() -> None:
    policy = make_policy("least_inflight", rng=random.Random(1))
    cands = [FakeReplica("r0", inflight=1), FakeReplica("r1", inflight=1), FakeReplica("r2", inflight=4)]
    counts = Counter(policy.choose(cands, req()).replica.id for _ in range(400))
    assert set(counts) == {"r0", "r1"} and min(counts.values()) > 150, counts


def test_p2c_picks_the_cheaper_of_the_pair_and_says_so() -> None:
    policy = make_policy("p2c_ewma", rng=random.Random(5))
    fast, slow = FakeReplica("fast"), FakeReplica("slow")
    observe(fast, 0.0031, now=0.0)
    observe(slow, 0.0098, now=0.0)
    decisions = [policy.choose([slow, fast], req(now=0.0)) for _ in range(50)]
    assert {d.replica.id for d in decisions} == {"fast"}  # two candidates: both are always compared
    assert decisions[0].reason == "p2c: fast cost 3.1ms < slow cost 9.8ms"


def test_p2c_counts_inflight_in_the_cost() -> None:
    policy = make_policy("p2c_ewma", rng=random.Random(5))
    busy, idle = FakeReplica("busy"), FakeReplica("idle")
    observe(busy, 0.010, now=0.0)
    observe(idle, 0.030, now=0.0)
    for _ in range(5):  # 10 ms × 6 > 30 ms × 1
        busy.stats.on_start()
    assert policy.choose([busy, idle], req(now=0.0)).replica is idle


def simulate(policy_name: str, latency: dict[str, float], calls: int = 2000, gap: float = 0.002) -> Counter:
    """Open-loop arrivals every ``gap`` seconds; each call takes its replica's latency."""
    policy = make_policy(policy_name, rng=random.Random(11))
    cands = replicas(len(latency))
    pending: list[tuple[float, int, float, FakeReplica]] = []
    picks: Counter = Counter()
    for k in range(calls):
        now = k * gap
        while pending and pending[0][0] <= now:
            done, _, started, replica = heapq.heappop(pending)
            replica.inflight -= 1
            replica.stats.on_finish(done - started, True, done)
        replica = policy.choose(cands, req(now=now)).replica
        replica.inflight += 1
        replica.stats.on_start()
        heapq.heappush(pending, (now + latency[replica.id], k, now, replica))
        picks[replica.id] += 1
    return picks


def test_p2c_avoids_a_replica_ten_times_slower() -> None:
    latency = {"r0": 0.010, "r1": 0.010, "r2": 0.100, "r3": 0.010}
    picks = simulate("p2c_ewma", latency)
    assert picks["r2"] / sum(picks.values()) <= 0.05, picks
    assert min(picks[r] for r in ("r0", "r1", "r3")) > 450, picks  # the fast ones share the load
    # The same load spread blindly would give it its full share: the check can fail.
    assert simulate("random", latency)["r2"] / 2000 > 0.2


def test_p2c_retries_a_slow_replica_once_its_estimate_has_aged() -> None:
    policy = make_policy("p2c_ewma", rng=random.Random(2))
    slow, fast = FakeReplica("slow"), FakeReplica("fast")
    observe(slow, 0.100, now=0.0)
    observe(fast, 0.010, now=60.0)
    fast.inflight = 2
    for _ in range(2):
        fast.stats.on_start()
    # A minute of silence has decayed the slow replica's 100 ms to ~1 ms: it is worth a probe.
    assert policy.choose([slow, fast], req(now=60.0)).replica is slow
    assert re.match(r"p2c: slow cost \d\.\dms < fast cost 30\.0ms", policy.choose([slow, fast], req(now=60.0)).reason)
