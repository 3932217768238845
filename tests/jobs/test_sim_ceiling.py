"""The oracles beside the latency model's P50 MAE: the closed form, the informed simulation, what they refuse."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest

from only1mcp.jobs.sim.ceiling import lognormal_mad_from_median, p50_mae_floor, p50_mae_informed
from only1mcp.jobs.sim.model import LogNormal
from only1mcp.jobs.sim.scenarios import build_scenario


@pytest.mark.parametrize("median, sigma", [(30.0, 0.5), (15.0, 0.4), (60.0, 0.6), (9.0, 0.0)])
def test_closed_form_matches_sampling(median: float, sigma: float) -> None:
    rng = random.Random(7)
    draws = [LogNormal(median, sigma).sample(rng) for _ in range(200_000)]
    sampled = statistics.fmean(abs(x - median) for x in draws)
    assert lognormal_mad_from_median(median, sigma) == pytest.approx(sampled, rel=0.01, abs=1e-9)


def test_floor_over_rows_follows_each_replicas_profile() -> None:
    profiles = {f"sim/{i}": p for i, (_, p) in enumerate(build_scenario("load-sensitive", 60).profiles())}
    fast = lognormal_mad_from_median(30.0 * 0.3, 0.5)  # r0: 0.3x the default search median
    slow = lognormal_mad_from_median(30.0, 0.5)
    rows = [{"replica": "sim/0", "tool": "search"}, {"replica": "sim/1", "tool": "search"},
            {"replica": "sim/9", "tool": "search"}, {"replica": "sim/1", "tool": "no_such_tool"}]
    floor = p50_mae_floor(rows, profiles)
    assert floor == {"mae_p50_ms": pytest.approx((fast + slow) / 2), "rows": 2, "rows_skipped": 2}
    assert p50_mae_floor(rows[2:], profiles) is None  # nothing known to average


def test_no_floor_for_a_fleet_with_scripted_faults() -> None:
    # drift's service times depend on each replica's clock, which the events do not carry
    profiles = {f"sim/{i}": p for i, (_, p) in enumerate(build_scenario("drift", 60).profiles())}
    assert p50_mae_floor([{"replica": "sim/0", "tool": "search"}], profiles) is None


def _fifo_trace(rate: float, workers: int, median: float, sigma: float, n: int, seed: int) -> list[dict[str, Any]]:
    """Poisson arrivals at one replica served first come first served: each call's latency is its wait
    plus a lognormal draw, as the sim-server serves them."""
    rng = random.Random(seed)
    free = [0.0] * workers  # when each worker is next free (s)
    t, calls = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        first = min(range(workers), key=free.__getitem__)
        start = max(t, free[first])
        free[first] = start + LogNormal(median, sigma).sample(rng) / 1000.0
        calls.append({"ts": t, "latency_ms": (free[first] - t) * 1000.0, "replica": "sim/0", "tool": "search"})
    return calls


def test_informed_oracle_on_an_idle_replica_is_the_closed_form() -> None:
    profiles = {"sim/0": build_scenario("homogeneous", 60).profiles()[0][1]}
    calls = _fifo_trace(rate=0.5, workers=2, median=30.0, sigma=0.5, n=2000, seed=3)  # ~1.5 % of calls overlap
    informed = p50_mae_informed(calls, holdout_since=0.0, profiles=profiles)
    assert informed is not None and informed["rows"] == 2000
    assert informed["mae_p50_ms"] == pytest.approx(lognormal_mad_from_median(30.0, 0.5), rel=0.06)


def test_informed_oracle_sits_between_the_wait_knowing_floor_and_a_queue_blind_median() -> None:
    # r0 of load-sensitive: ONE worker at 0.3x the default medians, here loaded to ~75 %
    profiles = {"sim/0": build_scenario("load-sensitive", 60).profiles()[0][1]}
    median = 30.0 * 0.3
    calls = _fifo_trace(rate=75.0, workers=1, median=median, sigma=0.5, n=4000, seed=5)
    latencies = [c["latency_ms"] for c in calls[2000:]]
    informed = p50_mae_informed(calls, holdout_since=calls[2000]["ts"], profiles=profiles)
    assert informed is not None and informed["rows"] == 2000
    blind = statistics.fmean(abs(x - statistics.median(latencies)) for x in latencies)  # the best constant
    floor = lognormal_mad_from_median(median, 0.5)
    assert floor < informed["mae_p50_ms"] < 0.8 * blind, (floor, informed, blind)


def test_informed_oracle_refuses_faults_and_skips_unknown_replicas_and_tools() -> None:
    profiles = {f"sim/{i}": p for i, (_, p) in enumerate(build_scenario("drift", 60).profiles())}
    calls = [{"ts": 1.0, "latency_ms": 10.0, "replica": "sim/0", "tool": "search"}]
    assert p50_mae_informed(calls, 0.0, profiles) is None
    profiles = {"sim/0": build_scenario("homogeneous", 60).profiles()[0][1]}
    calls += [{"ts": 2.0, "latency_ms": 10.0, "replica": "sim/7", "tool": "search"},
              {"ts": 3.0, "latency_ms": 10.0, "replica": "sim/0", "tool": "no_such_tool"}]
    informed = p50_mae_informed(calls, 0.0, profiles)
    assert informed is not None and (informed["rows"], informed["rows_skipped"]) == (1, 2)
    assert p50_mae_informed(calls[1:], 0.0, profiles) is None
