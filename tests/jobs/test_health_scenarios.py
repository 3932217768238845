"""The health benchmark's fleet and judging: pure functions over timelines."""

from __future__ import annotations

import pytest

from only1mcp.jobs.sim.health_scenarios import (
    SCENARIO_NAMES, Timing, build_fleet, episodes, false_alarm_bound_per_day, judge_scenario,
)
from only1mcp.jobs.sim.model import Profile

TIMING = Timing(warmup_s=60.0, ramp_s=120.0, tail_s=30.0)


def test_every_scenario_builds_valid_sim_profiles_with_the_fault_on_r0_only() -> None:
    fleet = build_fleet(TIMING)
    assert [s.name for s in fleet] == list(SCENARIO_NAMES)
    for scenario in fleet:
        profile = Profile.from_dict({"faults": list(scenario.faults)})  # the sim-server accepts them
        assert scenario.replica_ids() == [f"{scenario.server}-r{i}" for i in range(3)]
        if scenario.crashes:
            assert profile.crash_at == scenario.crash_at
            assert profile.is_down(scenario.crash_at + 1000.0)  # stays down once crashed
    by_name = {s.name: s for s in fleet}
    ramp = Profile.from_dict({"faults": list(by_name["latency-ramp"].faults)})
    assert ramp.latency_multiplier("search", 59.0) == 1.0 and ramp.latency_multiplier("search", 179.0) > 9.0
    spike = Profile.from_dict({"faults": list(by_name["spike"].faults)})
    mid = by_name["spike"].fault_start
    assert spike.latency_multiplier("search", mid + 4) == 8.0 and spike.latency_multiplier("search", mid + 9) == 1.0
    with pytest.raises(ValueError, match="unknown health scenario"):
        build_fleet(TIMING, ["nope"])


def test_episodes_from_samples() -> None:
    samples = [(0.0, False), (1.0, True), (1.2, True), (2.0, False), (3.0, True)]
    assert episodes(samples) == [(1.0, 2.0), (3.0, None)]
    assert episodes([]) == []


def test_judging_a_ramp_counts_lead_action_failed_calls_and_false_alarms() -> None:
    scenario = {s.name: s for s in build_fleet(TIMING)}["latency-ramp"]
    crash = scenario.crash_at
    flags = {"latency_ramp-r0": [30.0, crash - 45.0], "latency_ramp-r1": [100.0]}
    actions = {"latency_ramp-r0": [crash - 44.5]}
    calls = [{"start": 10.0, "ok": False}, {"start": 70.0, "ok": False}, {"start": 80.0, "ok": True}]
    got = judge_scenario(scenario, flags, actions, calls, exposure_s=3600.0)
    assert got["detected_s"] == crash - 45.0  # the flag before the fault started is a false alarm
    assert got["lead_s"] == 45.0 and got["action_delay_s"] == -44.5 and got["moved_s"] == 0.5
    assert got["failed"] == 2 and got["failed_after_fault"] == 1
    assert got["false_alarms"] == 2 and got["watched_replica_h"] == 2.0


def test_the_control_counts_every_flag_as_false() -> None:
    scenario = {s.name: s for s in build_fleet(TIMING)}["healthy"]
    got = judge_scenario(scenario, {"healthy-r0": [5.0], "healthy-r2": [6.0]}, {}, [], exposure_s=1800.0)
    assert got["false_alarms"] == 2 and got["watched_replica_h"] == 1.5 and "lead_s" not in got


def test_false_alarm_bound() -> None:
    assert false_alarm_bound_per_day(0, 72.0) == pytest.approx(1.0)  # rule of three over 3 replica-days
    assert false_alarm_bound_per_day(0, 1.0) == pytest.approx(72.0)
    assert false_alarm_bound_per_day(5, 24.0) > 5.0


def test_the_report_renders_every_kind_of_row_and_counts_the_long_control() -> None:
    from only1mcp.jobs.sim.health import _bars, _render

    fleet = build_fleet(TIMING, ["latency-ramp", "healthy"])
    figures = {"latency-ramp": {"detected_s": 100.0, "lead_s": 80.0, "failed_after_fault": 3, "calls": 900,
                                "false_alarms": 0, "watched_replica_h": 0.1},
               "healthy": {"failed_after_fault": 0, "calls": 900, "false_alarms": 0, "watched_replica_h": 0.15}}
    rows = {"classic_active": {"status": "ok", "scenarios": figures},
            "passive_outlier": {"status": "failed", "reason": "proxy did not start"},
            "ensemble": {"status": "ok", "scenarios": figures,
                         "detectors_alone": {"events": 1800, "spc": figures, "ensemble (replay)": figures,
                                             "long_control": {"replica_days": 3.0, "false_alarms": 0}}}}
    bars = {b.name: b for b in _bars(rows, fleet)}
    assert bars["latency-ramp_lead"].status == "PASS" and bars["error-ramp_lead"].status == "SKIP"
    assert bars["false_alarms"].value == pytest.approx(3.0 / (3.0 + 0.25 / 24.0))  # rule of three over it all
    assert "resampled: 0 in 3.00 replica-days" in bars["false_alarms"].note
    text = _render(rows, fleet, TIMING, list(bars.values()))
    assert "spc alone" in text and "passive_outlier: failed - proxy did not start" in text
