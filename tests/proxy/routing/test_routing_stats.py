"""ReplicaStats: peak-EWMA latency, in-flight count, counters, cost."""

from __future__ import annotations

import math

import pytest
from _routing_fakes import FakeReplica

from only1mcp.proxy.routing.stats import DEFAULT_LATENCY_S, ReplicaStats, cost_of


def finish(stats: ReplicaStats, latency_s: float, now: float, ok: bool = True) -> None:
    stats.on_start()
    stats.on_finish(latency_s, ok, now)


def test_an_unmeasured_replica_costs_a_small_default_that_grows_with_inflight() -> None:
    stats = ReplicaStats()
    assert stats.cost(0.0) == pytest.approx(DEFAULT_LATENCY_S) and 0 < DEFAULT_LATENCY_S < 0.01
    stats.on_start()
    stats.on_start()
    assert stats.cost(0.0) == pytest.approx(3 * DEFAULT_LATENCY_S)


def test_counters_inflight_and_snapshot() -> None:
    stats = ReplicaStats()
    assert stats.snapshot() == {"ewma_ms": None, "inflight": 0, "calls": 0, "failures": 0, "last_sample_at": None}
    stats.on_start()
    stats.on_start()
    stats.on_finish(0.020, True, now=5.0)
    stats.on_finish(0.020, False, now=5.0)
    stats.on_start()
    snap = stats.snapshot()
    assert snap == {"ewma_ms": 20.0, "inflight": 1, "calls": 2, "failures": 1, "last_sample_at": 5.0}
    assert stats.successes == 1 and stats.calls == 2


def test_cost_is_latency_times_inflight_plus_one() -> None:
    stats = ReplicaStats()
    finish(stats, 0.050, now=1.0)
    for _ in range(3):
        stats.on_start()
    assert stats.cost(1.0) == pytest.approx(0.050 * 4)


def test_peak_ewma_jumps_to_a_slow_sample_at_once() -> None:
    stats = ReplicaStats(decay_s=10.0)
    for t in range(10):
        finish(stats, 0.010, now=float(t))
    assert stats.latency(9.0) == pytest.approx(0.010)
    finish(stats, 0.100, now=9.5)
    assert stats.latency(9.5) == pytest.approx(0.100)


def test_peak_ewma_decays_back_toward_fast_samples() -> None:
    stats = ReplicaStats(decay_s=10.0)
    finish(stats, 0.100, now=0.0)
    seen = []
    for k in range(1, 61):  # one 10 ms sample a second: estimate = 10 + 90·e^(-k/10) ms
        finish(stats, 0.010, now=float(k))
        seen.append(stats.latency(float(k)))
        assert seen[-1] == pytest.approx(0.010 + 0.090 * math.exp(-k / 10.0))
    assert all(a > b for a, b in zip(seen, seen[1:]))
    assert seen[4] > 0.06 and seen[-1] < 0.011


def test_the_pace_of_recovery_does_not_depend_on_the_call_rate() -> None:
    sparse, dense = ReplicaStats(), ReplicaStats()
    finish(sparse, 0.1, 0.0)
    finish(dense, 0.1, 0.0)
    finish(sparse, 0.01, 10.0)
    for k in range(1, 101):
        finish(dense, 0.01, k / 10.0)
    assert sparse.latency(10.0) == pytest.approx(dense.latency(10.0))


def test_an_idle_estimate_decays_toward_the_default() -> None:
    stats = ReplicaStats(decay_s=10.0)
    finish(stats, 0.200, now=100.0)
    assert stats.latency(100.0) == pytest.approx(0.200)
    assert stats.latency(110.0) == pytest.approx(DEFAULT_LATENCY_S + (0.200 - DEFAULT_LATENCY_S) / math.e)
    assert stats.latency(1000.0) == pytest.approx(DEFAULT_LATENCY_S)
    assert stats.snapshot()["ewma_ms"] == 200.0  # reading does not change the estimate


def test_fast_failures_do_not_make_a_replica_look_fast() -> None:
    stats = ReplicaStats()
    finish(stats, 0.050, now=0.0)
    for k in range(1, 50):
        finish(stats, 0.001, now=float(k), ok=False)
    assert stats.latency(49.0) == pytest.approx(0.050)
    finish(stats, 0.300, now=50.0, ok=False)  # a slow failure still counts as slow
    assert stats.latency(50.0) == pytest.approx(0.300)


def test_bad_samples_and_clock_steps_are_survived() -> None:
    stats = ReplicaStats()
    finish(stats, 0.020, now=10.0)
    finish(stats, float("nan"), now=11.0)
    finish(stats, -1.0, now=5.0)  # clock stepped back; negative latency
    assert math.isfinite(stats.latency(12.0)) and 0 <= stats.latency(12.0) <= 0.020
    stats.on_finish(0.01, True, 13.0)  # unmatched finish
    assert stats.inflight == 0
    with pytest.raises(ValueError):
        ReplicaStats(decay_s=0)


def test_cost_of_a_candidate_without_stats() -> None:
    class Bare:
        id, inflight = "b", 2

    assert cost_of(Bare(), 0.0) == pytest.approx(3 * DEFAULT_LATENCY_S)
    fake = FakeReplica("f")
    finish(fake.stats, 0.04, 0.0)
    assert cost_of(fake, 0.0) == pytest.approx(0.04)
