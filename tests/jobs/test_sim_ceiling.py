"""The oracle beside the latency model's P50 MAE: the closed form, and what it refuses."""

from __future__ import annotations

import random
import statistics

import pytest

from only1mcp.jobs.sim.ceiling import lognormal_mad_from_median, p50_mae_floor
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
